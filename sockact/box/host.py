"""What the host must offer before a box can boot (root, CAP_SYS_ADMIN, unshare, cgroup2, systemd), and HarnessError."""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess

SYSTEMD = pathlib.Path("/lib/systemd/systemd")
# The namespaces launch.sh unshares; the probe tries the same set, so a refusal shows up before a boot.
UNSHARE_FLAGS = ("--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--net", "--cgroup")
_CAP_SYS_ADMIN = 21


class HarnessError(Exception):
    """A private systemd could not be booted or driven; the message says why."""


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None if a private systemd can be booted here (root, unshare, nsenter, /lib/systemd/systemd exist),
    else why not."""
    if not pathlib.Path("/proc/self/ns/pid").exists():
        return "a private systemd needs Linux namespaces (/proc/self/ns is missing)"
    if os.geteuid() != 0:
        return "a private systemd needs root (run the tests with sudo)"
    if not _has_cap_sys_admin():
        return "a private systemd needs CAP_SYS_ADMIN, which this process lacks"
    for tool in ("unshare", "nsenter", "bash", "mknod"):
        if shutil.which(tool) is None:
            return f"a private systemd needs {tool} (util-linux / coreutils), which is not on PATH"
    if not os.access(SYSTEMD, os.X_OK):
        return f"a private systemd needs systemd installed ({SYSTEMD} is missing)"
    try:
        cgroup_base()
    except HarnessError as exc:
        return str(exc)
    return _probe_unshare()


def _has_cap_sys_admin() -> bool:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def _probe_unshare() -> str | None:
    # Containers often forbid unshare even to root; find out now rather than mid-test.
    try:
        probe = subprocess.run(
            ["unshare", *UNSHARE_FLAGS, "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare does not work here: {exc}"
    if probe.returncode != 0:
        return f"unshare does not work here: {probe.stderr.strip() or f'exit status {probe.returncode}'}"
    return None


def cgroup_base() -> pathlib.Path:
    """The host directory of this process's cgroup2 group, under which boxes get their own."""
    mountpoint = cgroup2_mountpoint()
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            base = mountpoint / line[3:].lstrip("/")
            if base.is_dir():
                return base
    raise HarnessError("a private systemd needs this process's cgroup2 group, which was not found")


def cgroup2_mountpoint() -> pathlib.Path:
    """Where the host mounts its cgroup2 file system (normally /sys/fs/cgroup)."""
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return pathlib.Path(fields[0].split()[4])
    raise HarnessError("a private systemd needs a cgroup2 file system mounted, and none is")
