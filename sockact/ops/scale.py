"""`sockact scale`: set the worker count live, and persist it by writing NAME.target again for the new count."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..contract import HEADER, instance_index
from ..errors import NotOursError, SystemdError, UsageError
from ..generator import spec
from ..generator.versions import running_version
from .app import App, require_root, resolve
from .systemctl import daemon_reload, show_by_id, systemctl, try_systemctl

if TYPE_CHECKING:
    from ..generator.render import Unit

# States in which an instance holds (or is about to hold) a process.
_UP = ("active", "activating", "reloading")
_NOT_DOWN = (*_UP, "deactivating", "failed")


def worker_count(value: str) -> int:
    """N from 'N' or 'auto' (the CPUs this process may run on), with the same limits as --workers."""
    try:
        return spec.workers(value)
    except UsageError as exc:
        raise UsageError(str(exc).replace("--workers", "scale: N", 1)) from None


_HEADER_VERSION = re.compile(rf"^{re.escape(HEADER)} \S+ for systemd (\d+)\.", re.MULTILINE)


def target_for(text: str, name: str, count: int) -> Unit:
    """NAME.target rendered again for count workers, for the systemd version its header names. A target
    with other lines than sockact writes is refused rather than overwritten."""
    from ..generator.render import render_target  # jinja2 only here: the other operator commands never load it

    found = _HEADER_VERSION.search(text)
    version = int(found.group(1)) if found else running_version().version
    now = render_target(name, _wanted_count(text, name), version)
    if now.text != text:
        raise NotOursError(
            f"{name}.target differs from what sockact writes (edited by hand?); reinstall it with "
            f"`sudo sockact install {name} ...` and scale again"
        )
    return render_target(name, count, version)


def _wanted_count(text: str, name: str) -> int:
    wants = re.findall(r"(?m)^Wants=(.*)$", text)
    return len(wants[0].split()) if len(wants) == 1 else 0


def persist(app: App, count: int) -> Path:
    """Write NAME.target for count workers atomically where systemd loaded it from, then daemon-reload."""
    from ..generator.writer import write_units

    path = Path(app.target_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemdError(f"cannot read {path}: {exc.strerror}") from None
    write_units([target_for(text, app.name, count)], str(path.parent))
    daemon_reload()
    return path


def _live_changes(app: App, count: int) -> tuple[list[str], list[str]]:
    """(instances to start, instances to stop) to go from what runs now to count workers."""
    wanted = [app.instance(index) for index in range(1, count + 1)]
    states = show_by_id([*wanted, f"{app.name}@*.service"], ["ActiveState"])
    start = [unit for unit in wanted if states.get(unit, {}).get("ActiveState") not in _UP]
    stop = [
        unit
        for unit, props in states.items()
        if (instance_index(app.name, unit) or 0) > count and props.get("ActiveState") in _NOT_DOWN
    ]
    stop.sort(key=lambda unit: instance_index(app.name, unit) or 0)
    return start, stop


def apply_live(app: App, count: int) -> tuple[list[str], list[str]]:
    """Start the missing instances (each waits for READY=1), then stop the extra ones (each drains)."""
    start, stop = _live_changes(app, count)
    if start:
        try:
            systemctl("start", *start)
        except SystemdError as exc:
            raise SystemdError(
                f"{app.target_unit} now wants {count} workers, but starting them failed: {exc}; "
                f"see `sockact logs {app.name} -p warning`"
            ) from None
    if stop:
        systemctl("stop", *stop)
        try_systemctl("reset-failed", *stop)  # so stopped extras do not linger as failed units
    return start, stop


def scale(name: str, value: str, out: TextIO = sys.stdout) -> int:
    require_root("scale")
    count = worker_count(value)
    app = resolve(name)
    path = persist(app, count)
    summary = f"{name}: {len(app.wanted)} -> {count} worker{'s' if count != 1 else ''}, saved in {path}"
    if not app.running:
        out.write(f"{summary}; no worker runs now, the next connection to {app.socket_unit} starts {count}\n")
        return 0
    start, stop = apply_live(app, count)
    done = [f"started {' '.join(start)}"] if start else []
    done += [f"stopped {' '.join(stop)}"] if stop else []
    out.write("; ".join([summary, *done]) + "\n")
    return 0
