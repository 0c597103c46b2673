"""The only module that writes unit files to disk: all three or none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UsageError
from .render import Unit


def write_units(units: list[Unit], directory: str) -> list[Path]:
    """Write every unit into ``directory`` atomically: temp files first, renames at the end."""
    target = Path(directory)
    if not target.is_dir():
        raise UsageError(f"--output-dir {directory!r} is not a directory; create it first")
    staged: list[tuple[str, Path]] = []
    try:
        for unit in units:
            staged.append((_stage(target, unit), target / unit.filename))
        for temp, final in staged:
            os.replace(temp, final)
    except OSError as exc:
        for temp, _ in staged:
            Path(temp).unlink(missing_ok=True)
        raise UsageError(
            f"cannot write units into {directory!r}: {exc.strerror}; check the directory's permissions"
        ) from None
    return [final for _, final in staged]


def _stage(directory: Path, unit: Unit) -> str:
    fd, temp = tempfile.mkstemp(prefix=f".{unit.filename}.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(unit.text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, 0o644)
    return temp
