"""How much of the machine went to work other than the benchmark's own, so a noisy run says so.

The benchmark moves itself into a cgroup2 group of its own; everything it starts (wrk, the servers,
the private systemd and its units) lands in it or below. CPU time the whole machine spent in user and
system mode, minus what that group spent, is what other processes took from the contenders. On a
virtual machine, the time the hypervisor gave the CPUs to other guests (steal time in /proc/stat)
is taken from the contenders too, and counts the same way.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
from collections.abc import Iterator

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cgroup2_root() -> pathlib.Path | None:
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return pathlib.Path(fields[0].split()[4])
    return None


def _own_group(root: pathlib.Path) -> pathlib.Path | None:
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return root / line[3:].lstrip("/")
    return None


@contextlib.contextmanager
def own_cgroup() -> Iterator[pathlib.Path | None]:
    """Run the block in a fresh cgroup2 group below this process's; None where that is not possible."""
    root = _cgroup2_root()
    parent = _own_group(root) if root else None
    group = parent / f"sockact-bench-{os.getpid()}" if parent else None
    try:
        assert group is not None and parent is not None
        group.mkdir()
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except (AssertionError, OSError):
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()
        yield None
        return
    try:
        yield group
    finally:
        with contextlib.suppress(OSError):
            (parent / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()


def _machine_busy_s() -> tuple[float, float]:
    """CPU seconds the machine spent in user and system mode, and those stolen by the hypervisor."""
    # /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()
    steal = int(fields[8]) if len(fields) > 8 else 0
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / TICKS_PER_S, steal / TICKS_PER_S


def _group_busy_s(group: pathlib.Path) -> float:
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return 0.0


class Meter:
    """Share of the machine's CPU that others used between start() and share()."""

    def __init__(self, group: pathlib.Path | None) -> None:
        self.group = group
        self.start()

    def start(self) -> None:
        self.began = (time.monotonic(), _machine_busy_s(), self._ours())

    def _ours(self) -> float:
        return _group_busy_s(self.group) if self.group is not None else 0.0

    def share(self) -> float | None:
        """0.25 means others (processes, other guests) kept a quarter of all cores busy; None when it cannot be told."""
        if self.group is None:
            return None
        wall = time.monotonic() - self.began[0]
        busy, stolen = _machine_busy_s()
        others = max(0.0, (busy - self.began[1][0]) - (self._ours() - self.began[2])) + (stolen - self.began[1][1])
        return others / (wall * (os.cpu_count() or 1)) if wall > 0 else None


def wait_until_quiet(group: pathlib.Path | None, limit_s: float, threshold: float = 0.05) -> float | None:
    """Wait (up to limit_s) for a second in which others used under `threshold` of the machine."""
    deadline = time.monotonic() + limit_s
    while True:
        meter = Meter(group)
        time.sleep(1.0)
        share = meter.share()
        if share is None or share < threshold or time.monotonic() > deadline:
            return share
