"""Throwaway private systemd instances, booted in new namespaces, for running real units in tests.

``PrivateSystemd`` starts ``/lib/systemd/systemd`` as PID 1 of fresh PID, mount, UTS, IPC, network
and cgroup namespaces, with its own /run, /tmp, /var/tmp, /dev, /sys and journal, so units can be
installed, started and load-tested without touching the machine's own systemd, kernel settings or
files. The same module is a pytest plugin: fixtures ``private_systemd`` (one box per test module)
and ``fresh_systemd`` (one box per test).

Needs root with CAP_SYS_ADMIN, util-linux ``unshare``/``nsenter``, a cgroup2 mount and systemd
installed (it need not be running). ``unavailable_reason()`` says why a machine cannot do it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from typing import Self

__all__ = ["HarnessError", "PrivateSystemd", "unavailable_reason"]

SYSTEMD = pathlib.Path("/lib/systemd/systemd")
TARGET = "sockact-test.target"
CONTAINER = "sockact-test"
_CAP_SYS_ADMIN = 21

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

# Runs as the forked child of unshare, i.e. as PID 1 of the new namespaces, and becomes systemd.
# Everything mounted here lives only in the box's private mount namespace.
_BOOT_SCRIPT = r"""
set -eu
target=$SOCKACT_TARGET systemd=$SOCKACT_SYSTEMD container=$SOCKACT_CONTAINER masked=$SOCKACT_MASKED_UNITS
# Private scratch space: tmpfiles and services must not clean or fill the host's.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
# The host's persistent journal must neither receive the box's logs nor show up in them.
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal; fi
# A private /dev: systemd and journald create symlinks and mount points there.
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
# Kernel tunables are global: read-only, except the box's own network namespace.
mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net; mount -o remount,bind,rw /proc/sys/net
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; mount -o remount,bind,ro /proc/sysrq-trigger
fi
# sysfs for this network namespace, read-only as in any container; cgroup2 rooted at the box.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mkdir -p /run/systemd/system /run/systemd/journald.conf.d
for unit in $masked; do ln -s /dev/null "/run/systemd/system/$unit"; done
printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/50-sockact-test.conf
cat > "/run/systemd/system/$target" <<EOF
[Unit]
Description=Private systemd for sockact tests
Requires=sysinit.target sockets.target systemd-journald.service
After=sysinit.target sockets.target systemd-journald.service
AllowIsolate=yes
EOF
# container= makes systemd behave as in a container; nothing else of the caller's environment
# should reach the manager.
exec env -i container="$container" "$systemd" --system --unit="$target"
"""

# Runs first, on the host: moves the box into a cgroup of its own (so systemd inside builds its
# tree there, not in the host's), leaves a watchdog behind, then becomes unshare. The watchdog
# holds the read end of a pipe whose write end only the harness holds: when the harness dies
# without closing the box, EOF arrives and the watchdog kills and removes the box's cgroup.
_LAUNCH_SCRIPT = r"""
set -eu
cg=$1
exec 3<&0
( cat <&3 >/dev/null
  echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
  for _ in $(seq 50); do
      [ -d "$cg" ] || break
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null && break
      sleep 0.1
  done ) &
echo $$ > "$cg/cgroup.procs"
exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --mount-proc \
    --propagation private bash -c "$2" 3<&- </dev/null
"""

_UNSHARE_FLAGS = ("--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--net", "--cgroup")


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
        _cgroup_base()
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
            ["unshare", *_UNSHARE_FLAGS, "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare does not work here: {exc}"
    if probe.returncode != 0:
        return f"unshare does not work here: {probe.stderr.strip() or f'exit status {probe.returncode}'}"
    return None


def _cgroup_base() -> pathlib.Path:
    """The host directory of this process's cgroup2 group, under which boxes get their own."""
    mountpoint = _cgroup2_mountpoint()
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            base = mountpoint / line[3:].lstrip("/")
            if base.is_dir():
                return base
    raise HarnessError("a private systemd needs this process's cgroup2 group, which was not found")


def _cgroup2_mountpoint() -> pathlib.Path:
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return pathlib.Path(fields[0].split()[4])
    raise HarnessError("a private systemd needs a cgroup2 file system mounted, and none is")


@dataclass
class _Box:
    """Everything a running box holds on the host; kept apart from PrivateSystemd so a finalizer can free it."""

    launcher: subprocess.Popen[bytes]
    console: IO[bytes]
    cgroup: pathlib.Path
    watchdog_fd: int
    pid: int = 0
    pidfd: int = -1


def _destroy(box: _Box) -> None:
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


class _GroupPopen(subprocess.Popen[Any]):
    """A Popen of nsenter whose signals reach the whole process group.

    nsenter forks to enter the PID namespace and does not forward signals, so terminate() and
    kill() are sent to the group, which holds both nsenter and the command inside the box.
    """

    def send_signal(self, sig: int) -> None:
        self.poll()
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


class PrivateSystemd:
    """A throwaway systemd running as PID 1 of its own namespaces; use as a context manager.

    Units go into the box's /run/systemd/system (``write_unit``); commands run inside through
    nsenter (``run``, ``systemctl``, ``journal``). The host's files are shared: a venv under /opt
    is usable by DynamicUser= services, /root is not. Boxes are independent of each other.
    """

    def __init__(self, *, boot_timeout: float = 30.0) -> None:
        self.boot_timeout = boot_timeout
        self._box: _Box | None = None
        self._finalizer: weakref.finalize[[_Box], PrivateSystemd] | None = None
        self._version: int | None = None

    @property
    def pid(self) -> int:
        """The host's PID of the systemd inside the box."""
        return self._running().pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self._box.pid}" if self._box is not None else "stopped"
        return f"<PrivateSystemd {state}>"

    def start(self) -> Self:
        """Boot the box and wait until systemd reports the boot finished."""
        if self._box is not None:
            return self
        reason = unavailable_reason()
        if reason is not None:
            raise HarnessError(reason)
        box = self._launch()
        self._box = box
        self._finalizer = weakref.finalize(self, _destroy, box)
        try:
            self._await_boot(box)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill the box and everything in it. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        self._box = None
        self._finalizer = None

    def _launch(self) -> _Box:
        cgroup = _cgroup_base() / f"{CONTAINER}-{os.getpid()}-{secrets.token_hex(4)}"
        cgroup.mkdir()
        watch_r, watch_w = os.pipe()
        console = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the box, closed by _destroy
        env = {
            **os.environ,
            "SOCKACT_MASKED_UNITS": " ".join(MASKED_UNITS),
            "SOCKACT_TARGET": TARGET,
            "SOCKACT_CONTAINER": CONTAINER,
            "SOCKACT_SYSTEMD": str(SYSTEMD),
        }
        try:
            launcher = subprocess.Popen(
                ["bash", "-c", _LAUNCH_SCRIPT, "sockact-test", str(cgroup), _BOOT_SCRIPT],
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
        return _Box(launcher=launcher, console=console, cgroup=cgroup, watchdog_fd=watch_w)

    def _await_boot(self, box: _Box) -> None:
        deadline = time.monotonic() + self.boot_timeout
        box.pid = self._await_systemd_pid(box, deadline)
        box.pidfd = os.pidfd_open(box.pid)
        state = ""
        while state not in ("running", "degraded"):
            if box.launcher.poll() is not None:
                raise HarnessError(self._boot_failure(box, f"systemd exited during boot ({state or 'no state'})"))
            if state in ("maintenance", "stopping", "offline"):
                raise HarnessError(self._boot_failure(box, f"systemd boot failed: state {state}"))
            if time.monotonic() > deadline:
                summary = f"systemd did not finish booting within {self.boot_timeout:g}s ({state or 'no state'})"
                raise HarnessError(self._boot_failure(box, summary))
            time.sleep(0.02)
            state = self._system_state()
        # The box's network namespace starts with lo down; servers and clients inside need it.
        self.run("ip", "link", "set", "lo", "up")

    def _system_state(self) -> str:
        """What ``systemctl is-system-running`` says, or why it said nothing (manager not up yet)."""
        answer = self.run("systemctl", "is-system-running", check=False, timeout=10)
        return answer.stdout.strip() or answer.stderr.strip()

    def _await_systemd_pid(self, box: _Box, deadline: float) -> int:
        """The PID of unshare's child once it has exec'd systemd (before that it is the boot script)."""
        while True:
            for child in _children(box.launcher.pid):
                if _comm(child) == "systemd":
                    return child
            if box.launcher.poll() is not None:
                raise HarnessError(self._boot_failure(box, "the box exited before systemd started"))
            if time.monotonic() > deadline:
                raise HarnessError(self._boot_failure(box, "systemd did not start in the box"))
            time.sleep(0.005)

    def _boot_failure(self, box: _Box, summary: str) -> str:
        tail: list[str] = []
        if box.pid and box.launcher.poll() is None:
            with contextlib.suppress(HarnessError):
                tail = self.run(
                    "journalctl", "--no-pager", "-q", "-n", "15", check=False, timeout=10
                ).stdout.splitlines()
        if not tail:
            box.console.flush()
            box.console.seek(0)
            tail = box.console.read().decode(errors="replace").splitlines()[-15:]
        return summary + ("; last log lines:\n" + "\n".join(tail) if tail else "")

    def _running(self) -> _Box:
        if self._box is None or not self._box.pid:
            raise HarnessError("the private systemd is not running (call start() first)")
        return self._box

    def _nsenter(self, argv: tuple[str, ...]) -> list[str]:
        if not argv:
            raise HarnessError("no command given to run in the private systemd")
        return ["nsenter", "-t", str(self._running().pid), "-a", "--", *argv]

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        # Layered over the caller's environment so PATH and locale carry over; pagers and colours
        # would only get in the way of parsing output.
        env = {**os.environ, "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "PAGER": "cat"}
        env.update(extra or {})
        return env

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the box and capture its output as text.

        ``env`` adds to the caller's environment. On a non-zero exit with ``check``, or on
        ``timeout``, raise HarnessError naming the command, its exit status and stderr.
        """
        with _GroupPopen(
            self._nsenter(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",  # journal and unit output may hold any bytes
            env=self._env(env),
            start_new_session=True,  # so a timeout can kill the command inside, not just nsenter
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=5)
                raise HarnessError(f"timed out after {timeout:g}s in the private systemd: {shlex.join(argv)}") from None
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise HarnessError(f"{shlex.join(argv)} exited with status {result.returncode}: {err.strip()}")
        return result

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside the box in the background; terminate()/kill() reach the command itself."""
        kw.setdefault("start_new_session", True)
        kw["env"] = self._env(kw.get("env"))
        return _GroupPopen(self._nsenter(argv), **kw)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def journal(self, *args: str) -> str:
        """journalctl's output for args, e.g. ``journal("-u", "app.socket")``."""
        return self.run("journalctl", "--no-pager", *args).stdout

    def path(self, inside: str) -> pathlib.Path:
        """The host's path to a path inside the box (through /proc/PID/root).

        Absolute symlinks met on the way resolve against the host's root, not the box's.
        """
        return pathlib.Path(f"/proc/{self._running().pid}/root") / inside.lstrip("/")

    def unit_dir(self) -> pathlib.Path:
        """The host's path to the box's /run/systemd/system, where runtime units go."""
        return self.path("/run/systemd/system")

    def write_unit(self, name: str, text: str) -> None:
        """Write a unit (or a drop-in such as ``app.service.d/10-x.conf``) into the box; daemon_reload() follows."""
        relative = pathlib.PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise HarnessError(f"unit name must be relative to the unit directory: {name!r}")
        target = self.unit_dir() / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of unit as a dict; all properties unless some are named."""
        selected = [f"--property={','.join(props)}"] if props else []
        output = self.systemctl("show", *selected, "--", unit).stdout
        return dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 20, interval: float = 0.05, what: str = ""
    ) -> None:
        """Poll predicate until it is true; HarnessError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out waiting for {what or 'condition'} after {timeout:g}s")
            time.sleep(interval)

    def wait_active(self, unit: str, timeout: float = 20) -> None:
        """Wait until unit is active; fail at once, with its log, if it fails instead."""

        def active() -> bool:
            state = self.systemctl("is-active", "--", unit, check=False).stdout.strip()
            if state == "failed":
                log = self.run("journalctl", "--no-pager", "-q", "-n", "20", "-u", unit, check=False).stdout
                raise HarnessError(f"{unit} failed; last log lines:\n{log.rstrip()}")
            return state == "active"

        self.wait_for(active, timeout=timeout, what=f"{unit} to become active")

    def systemd_version(self) -> int:
        """The major version of the systemd running in the box, e.g. 252."""
        if self._version is None:
            first_line = self.systemctl("--version").stdout.split("\n", 1)[0]
            self._version = int(first_line.split()[1])
        return self._version


def _children(pid: int) -> list[int]:
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


def _comm(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _skip_or_fail(reason: str) -> NoReturn:
    """Skip where a private systemd cannot run; in CI that is a broken runner, so fail instead."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"CI must be able to boot a private systemd: {reason}", pytrace=False)
    pytest.skip(reason)


def _booted_box() -> Iterator[PrivateSystemd]:
    reason = unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    with PrivateSystemd() as box:
        yield box


try:
    import pytest
except ImportError:  # the harness works without pytest; only the fixtures need it
    pass
else:

    @pytest.fixture(scope="module")
    def private_systemd() -> Iterator[PrivateSystemd]:
        """A private systemd shared by the tests of one module."""
        yield from _booted_box()

    @pytest.fixture
    def fresh_systemd() -> Iterator[PrivateSystemd]:
        """A private systemd of this test's own."""
        yield from _booted_box()
