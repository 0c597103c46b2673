"""A box's life on the host: launching it (launch.sh, boot.sh, the units it masks) and destroying it without a trace."""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from typing import IO

from .host import SYSTEMD, HarnessError, cgroup_base

TARGET = "sockact-test.target"
CONTAINER = "sockact-test"

# Units the box must never run. Each touches something the box shares with the host (kernel
# tunables, modules, /etc, /var, the console) or only slows the boot down. Masking a name that
# does not exist is harmless, so the list can cover several systemd versions.
MASKED_UNITS: tuple[str, ...] = (
    # kernel state: sysctls, binfmt, modules, static device nodes, pstore, hwdb, kernel mounts
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "modprobe@.service",
    "systemd-pstore.service",
    "systemd-hwdb-update.service",
    "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-journald-audit.socket",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    # devices: the box has no udev and must not process the host's uevents
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    # the shared root file system: /etc, /var, /root and the boot loader stay as they are
    "systemd-remount-fs.service",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysusers.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-update-done.service",
    "systemd-journal-catalog-update.service",
    "ldconfig.service",
    "systemd-repart.service",
    "systemd-boot-update.service",
    "systemd-boot-random-seed.service",
    # clock, network and consoles belong to the host
    "systemd-timesyncd.service",
    "systemd-networkd-wait-online.service",
    "getty.target",
    "console-getty.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    # maintenance jobs that would act on the host's packages, disks and logs
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "logrotate.timer",
    "cron.service",
)


def _script(name: str) -> str:
    # Package data next to this module, so the shell reads as shell (and shellcheck can read it too).
    return resources.files("sockact.box").joinpath(name).read_text(encoding="utf-8")


@dataclass
class Box:
    """Everything a running box holds on the host; kept apart from PrivateSystemd so a finalizer can free it."""

    launcher: subprocess.Popen[bytes]
    console: IO[bytes]
    cgroup: pathlib.Path
    watchdog_fd: int
    pid: int = 0
    pidfd: int = -1


def destroy(box: Box) -> None:
    """Kill every process of the box and remove its cgroup. Safe to call on a half-built box."""
    if box.pidfd >= 0:
        # Killing the namespace's init makes the kernel kill everything else inside it.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(box.pidfd, signal.SIGKILL)
        _wait_readable(box.pidfd, 10)
        os.close(box.pidfd)
        box.pidfd = -1
        # unshare exits once it has reaped systemd, so no zombie is left to the host's init.
        # Unreaped, its pid still names the process group (unshare, the watchdog) killed next.
        _wait_exited_unreaped(box.launcher.pid, 10)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(box.launcher.pid, signal.SIGKILL)
        box.launcher.wait()
        _remove_cgroup(box.cgroup)
    finally:
        if box.watchdog_fd >= 0:
            os.close(box.watchdog_fd)
            box.watchdog_fd = -1
        box.console.close()


def _wait_readable(fd: int, timeout: float) -> None:
    # A pidfd turns readable when its process has exited.
    select.select([fd], [], [], timeout)


def _wait_exited_unreaped(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is not None:
            return
        time.sleep(0.01)


def _remove_cgroup(cgroup: pathlib.Path) -> None:
    if not cgroup.exists():
        return
    with contextlib.suppress(OSError):
        (cgroup / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 10
    while True:
        try:
            _rmdir_tree(cgroup)
            return
        except OSError as exc:
            # EBUSY until the kernel has finished tearing down the killed processes.
            if time.monotonic() > deadline:
                raise HarnessError(f"could not remove the box's cgroup {cgroup}: {exc}") from exc
            time.sleep(0.02)


def _rmdir_tree(top: pathlib.Path) -> None:
    # cgroup directories hold only kernel files, which rmdir takes with them; children first.
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(dirpath)


def launch() -> Box:
    """Start a box's launcher in a new cgroup; systemd is not up yet when this returns."""
    cgroup = cgroup_base() / f"{CONTAINER}-{os.getpid()}-{secrets.token_hex(4)}"
    cgroup.mkdir()
    watch_r, watch_w = os.pipe()
    console = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the box, closed by destroy()
    env = {
        **os.environ,
        "SOCKACT_MASKED_UNITS": " ".join(MASKED_UNITS),
        "SOCKACT_TARGET": TARGET,
        "SOCKACT_CONTAINER": CONTAINER,
        "SOCKACT_SYSTEMD": str(SYSTEMD),
    }
    try:
        launcher = subprocess.Popen(
            ["bash", "-c", _script("launch.sh"), "sockact-test", str(cgroup), _script("boot.sh")],
            stdin=watch_r,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # one process group to kill, whatever happens inside
        )
    except BaseException:
        os.close(watch_w)
        console.close()
        cgroup.rmdir()
        raise
    finally:
        os.close(watch_r)
    return Box(launcher=launcher, console=console, cgroup=cgroup, watchdog_fd=watch_w)


def children(pid: int) -> list[int]:
    """The PIDs of pid's child processes."""
    try:
        return [int(child) for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return _children_by_scan(pid)


def _children_by_scan(pid: int) -> list[int]:
    # Kernels without CONFIG_PROC_CHILDREN: parent PIDs from /proc/*/stat.
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def comm(pid: int) -> str:
    """The command name of pid, or "" once it has gone."""
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
