"""What this machine's cgroup hierarchy lets systemd enforce of MemoryMax= and MemoryHigh=."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import UnitSpec

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryControl:
    """Which of the two limits the kernel enforces under this hierarchy, and why not."""

    memory_max: bool
    memory_high: bool
    why: str = ""


def memory_control(root: Path = ROOT) -> MemoryControl:
    """Read the hierarchy systemd sees. Unified (cgroup v2): both limits need "memory" in
    cgroup.controllers. Legacy or hybrid (v1 memory controller): systemd writes MemoryMax= to
    memory.limit_in_bytes, and cgroup v1 has nothing for MemoryHigh=."""
    try:
        controllers = (root / "cgroup.controllers").read_text().split()
    except FileNotFoundError:
        if (root / "memory").is_dir():
            return MemoryControl(True, False, "the memory controller is cgroup v1, which has no MemoryHigh=")
        return MemoryControl(False, False, "no memory controller is mounted")
    except OSError:
        return MemoryControl(False, False, "the cgroup hierarchy could not be read")
    if "memory" in controllers:
        return MemoryControl(True, True)
    return MemoryControl(
        False, False, "the cgroup v2 hierarchy has no memory controller (it is on cgroup v1, or not delegated)"
    )


def memory_note(spec: UnitSpec, root: Path = ROOT) -> str | None:
    """A note for stderr when this machine would accept but not enforce a memory limit the spec sets."""
    control = memory_control(root)
    unenforced = [
        f"{key}={value}"
        for key, value, enforced in (
            ("MemoryHigh", spec.memory_high, control.memory_high),
            ("MemoryMax", spec.memory_max, control.memory_max),
        )
        if value and not enforced
    ]
    if not unenforced:
        return None
    return (
        f"note: on this machine systemd accepts {' and '.join(unenforced)} but cannot enforce "
        f"{'it' if len(unenforced) == 1 else 'them'}: {control.why}; --max-rss works without cgroups"
    )
