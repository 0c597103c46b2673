"""The worker sandbox: which hardening directives NAME@.service gets, why, and what each one costs.

systemd binds the port and hands the worker a ready socket, so a worker needs no privilege at all:
it reads its code, talks to the network and writes to stderr. Everything else is taken away here.
Every line below was checked against what CPython, uvicorn, uvloop, httptools, ctypes and Django
need (tests/systemd/test_hardening.py serves an ASGI app, a WSGI app and a Django project under it).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath

from . import versions
from .spec import UnitSpec

# Paths a default DynamicUser= worker could never read anyway; an app kept there needs
# ProtectHome=read-only instead of an invisible /home.
HOME_PREFIXES = ("/home", "/root", "/run/user")


@dataclass(frozen=True)
class Hardening:
    """One sandbox directive: the line, what it does, and how an app that needs more lifts it."""

    key: str
    value: str
    does: str
    trade_off: str
    exposure_without: float  # systemd-analyze security NAME@1.service (systemd 252) with this line alone removed

    @property
    def line(self) -> str:
        return f"{self.key}={self.value}"


# The full sandbox in unit order. exposure_without is measured by tests/systemd/test_hardening.py, which
# fails when systemd's own score of a unit without the line differs from the number here.
SANDBOX: tuple[Hardening, ...] = (
    Hardening(
        "DynamicUser",
        "yes",
        "runs the workers as a user allocated at start and freed at stop, owning no file on the system",
        "the app can write nowhere it could not before; --user USER uses a fixed account instead "
        "(files it owns stay writable with --writable)",
        1.2,
    ),
    Hardening(
        "ProtectSystem",
        "strict",
        "mounts the whole file system read-only for the worker, /etc and /usr included",
        "the app cannot write next to its code (SQLite files, uploads, __pycache__); "
        "--state-dir/--cache-dir/--logs-dir or --writable PATH open what it needs",
        1.2,
    ),
    Hardening(
        "ProtectHome",
        "yes",
        "hides /home, /root and /run/user (read-only instead when the app or its interpreter lives there)",
        "an app under /home gets ProtectHome=read-only automatically",
        1.3,
    ),
    Hardening(
        "PrivateTmp",
        "yes",
        "gives the workers their own /tmp and /var/tmp, emptied at stop",
        "files in /tmp are not shared with other services (DynamicUser= implies it anyway)",
        1.2,
    ),
    Hardening(
        "PrivateDevices",
        "yes",
        "a /dev with only null, zero, random, urandom, tty and friends; no disks, no hardware",
        "apps that open hardware devices (GPUs, serial ports) need --no-harden",
        1.5,
    ),
    Hardening(
        "PrivateUsers",
        "yes",
        "a user namespace: only root and the worker's own user are mapped, other users appear as nobody",
        "files readable only through a group other than the worker's own become unreadable",
        1.4,
    ),
    Hardening(
        "PrivateMounts",
        "yes",
        "the worker's mounts are its own and none of its mount changes reach the host",
        "none for web apps",
        1.2,
    ),
    Hardening(
        "PrivateIPC",
        "yes",
        "its own SysV IPC and POSIX message queue namespace (systemd 248+)",
        "SysV shared memory is not shared with processes outside the worker",
        1.2,
    ),
    Hardening("ProtectKernelTunables", "yes", "/proc/sys, /sys and friends read-only", "none for web apps", 1.4),
    Hardening(
        "ProtectKernelModules", "yes", "no loading of kernel modules, /usr/lib/modules hidden", "none for web apps", 1.4
    ),
    Hardening("ProtectKernelLogs", "yes", "no reading of the kernel log (dmesg)", "none for web apps", 1.4),
    Hardening("ProtectControlGroups", "yes", "/sys/fs/cgroup read-only", "none for web apps", 1.4),
    Hardening("ProtectClock", "yes", "no setting of the system or hardware clock", "none for web apps", 1.3),
    Hardening("ProtectHostname", "yes", "no changing of the host name", "none for web apps", 1.2),
    Hardening(
        "ProtectProc",
        "invisible",
        "other processes are invisible in /proc (hidepid=invisible, kernel 5.8+)",
        "the app cannot inspect other processes (ps, psutil.process_iter() see only the worker's own)",
        1.4,
    ),
    Hardening(
        "ProcSubset",
        "pid",
        "/proc shows process directories only: no /proc/meminfo, /proc/cpuinfo, /proc/stat",
        "libraries that read /proc/meminfo or /proc/cpuinfo (psutil.virtual_memory(), some "
        "monitoring agents) fail; os.cpu_count() and os.sched_getaffinity() still work",
        1.2,
    ),
    Hardening(
        "RestrictAddressFamilies",
        "AF_UNIX AF_INET AF_INET6",
        "new sockets may be unix, IPv4 or IPv6 only (the journal, notify socket, databases, HTTP clients)",
        "no netlink (getifaddrs(), socket.if_nameindex()), no raw or packet sockets",
        1.7,
    ),
    Hardening(
        "RestrictNamespaces",
        "yes",
        "no creating of namespaces (containers, sandboxes of its own)",
        "apps that spawn sandboxed children (bubblewrap, browsers) need --no-harden",
        2.0,
    ),
    Hardening(
        "RestrictRealtime",
        "yes",
        "no realtime scheduling (a spinning worker cannot freeze a core)",
        "none for web apps",
        1.3,
    ),
    Hardening("RestrictSUIDSGID", "yes", "no creating of set-user-ID or set-group-ID files", "none", 1.2),
    Hardening("LockPersonality", "yes", "no switching of the execution domain (personality(2))", "none", 1.3),
    Hardening(
        "MemoryDenyWriteExecute",
        "yes",
        "no memory that is writable and executable at once, the usual first step of code injection",
        "JIT compilers (PyPy, numba, Python 3.13's experimental JIT) and cffi's ffi.callback() in ABI "
        "mode need W+X memory and fail; ctypes callbacks work (libffi 3.4 trampolines); "
        "--allow-jit lifts it",
        1.3,
    ),
    Hardening("SystemCallArchitectures", "native", "no 32-bit (x32, i386) system calls on a 64-bit host", "none", 1.4),
    Hardening(
        "SystemCallFilter",
        "@system-service",
        "only the system calls of an ordinary service: no mount, reboot, swap, kexec, module, raw I/O ...",
        "a call outside the list fails with EPERM (see SystemCallErrorNumber=) instead of working",
        1.7,
    ),
    Hardening(
        "SystemCallFilter",
        "~@privileged @resources",
        "of those, not the privileged ones (chown, setuid, capset, chroot ...) nor the resource ones "
        "(sched_setaffinity, setpriority, mbind ...)",
        "os.chown(), os.nice() and os.sched_setaffinity() raise PermissionError "
        "(resource.setrlimit() still works: glibc uses prlimit64)",
        1.5,
    ),
    Hardening(
        "SystemCallErrorNumber",
        "EPERM",
        "a filtered system call fails with EPERM, which Python raises as PermissionError, "
        "instead of killing the worker with SIGSYS",
        "none: it only softens the failure mode",
        1.2,
    ),
    Hardening(
        "CapabilityBoundingSet",
        "",
        "no capabilities at all, even if the worker ran as root: no binding of low ports, no chown, no kill",
        "none: systemd binds the socket (port 80 too) before the worker starts",
        3.0,
    ),
    Hardening(
        "NoNewPrivileges",
        "yes",
        "set-user-ID programs run by the app gain nothing",
        "sudo, ping and other set-uid helpers do not work from inside the app",
        1.2,
    ),
    Hardening(
        "RemoveIPC", "yes", "SysV IPC objects and POSIX shared memory of the worker's user go at stop", "none", 1.2
    ),
    Hardening(
        "UMask",
        "0077",
        "files the app creates are private to its user",
        "files meant for other users (logs read by a group) need an explicit chmod",
        1.2,
    ),
)

ALLOW_JIT_LIFTS = "MemoryDenyWriteExecute"


def protect_home(spec: UnitSpec) -> str:
    """'read-only' when code, interpreter or a writable path lives under /home, else 'yes' (invisible)."""
    paths = [spec.python, spec.chdir, spec.env_file, *spec.writable]
    if spec.exec_argv is not None:
        paths.append(spec.exec_argv[0])
    for path in paths:
        if path is not None and any(path == top or path.startswith(top + "/") for top in HOME_PREFIXES):
            return "read-only"
    return "yes"


def chosen(spec: UnitSpec) -> list[Hardening]:
    """The sandbox entries this spec gets on its systemd version, with values adjusted to the spec."""
    if not spec.harden or spec.container is not None:  # a container worker's sandbox is podman's flags
        return []
    picked: list[Hardening] = []
    for entry in SANDBOX:
        if entry.key == "DynamicUser" and spec.user is not None:
            continue
        if entry.key == ALLOW_JIT_LIFTS and spec.allow_jit:
            continue
        if not versions.supports(spec.systemd_version, entry.key, entry.value):
            continue
        if entry.key == "ProtectHome":
            entry = Hardening(entry.key, protect_home(spec), entry.does, entry.trade_off, entry.exposure_without)
        picked.append(entry)
    return picked


def lines(spec: UnitSpec) -> list[str]:
    """The sandbox lines of NAME@.service; values are fixed words, nothing from the user."""
    return [entry.line for entry in chosen(spec)]


def closed_to_others(path: str) -> str | None:
    """The first directory or file on ``path`` that users other than its owner cannot pass or read, if any.

    A dynamic user is nobody's owner and in nobody's group, so it gets exactly the "other" bits.
    Paths that do not exist here are not judged: the units may be meant for another machine.
    """
    parts = PurePosixPath(path).parts
    for depth in range(1, len(parts) + 1):
        current = str(PurePosixPath(*parts[:depth]))
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        needed = stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH
        if depth == len(parts) and stat.S_ISDIR(mode):
            needed |= stat.S_IROTH
        if not mode & needed:
            return current
    return None


def unreadable_note(spec: UnitSpec) -> str | None:
    """A one-line note when a dynamic-user worker could not read its interpreter or its app directory."""
    if not spec.dynamic_user:
        return None
    for path in (spec.python, spec.chdir):
        closed = closed_to_others(path) if path else None
        if closed:
            return (
                f"note: {closed} is closed to other users, so the workers' dynamic user cannot reach {path}; "
                "install the app and its venv under /srv or /opt (mode 755), or pass --user ACCOUNT"
            )
    return None
