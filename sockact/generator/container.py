"""Workers in podman containers: the podman command lines of NAME@.service for `--container IMAGE`.

Each worker instance runs one container. podman (3.4 and newer) hands it the listening socket of
NAME.socket (LISTEN_FDS, with LISTEN_PID=1: `sockact run` is PID 1 in the container), and
`--sdnotify=container` lets READY=1, WATCHDOG=1 and STATUS= from inside reach systemd, so the
container needs no network of its own (`--network=none`). `--cgroups=disabled` keeps the container's
processes in the worker unit's own cgroup: MemoryMax=, MemoryHigh=, KillMode= and `systemctl status`
apply to them exactly as to a worker without a container, and a final SIGKILL of the unit reaches
them. docs/containers.md explains every flag.
"""

from __future__ import annotations

import math

from ..contract import ENV_APP, ENV_WORKER
from . import escape
from .spec import UnitSpec

PODMAN = "/usr/bin/podman"
INSTALL = "/usr/bin/install"
RM = "/usr/bin/rm"
# Inside the container: the worker's runtime directory (boot-failure counters) and the scoreboard
# directory the workers of one app share, bind-mounted from /run/NAME and /run/NAME/shm on the host.
RUNTIME_IN_CONTAINER = "/run/sockact"
SCOREBOARD_IN_CONTAINER = "/dev/shm"
# Seconds podman itself may take around a stop (its own start, `podman stop`, removing the container)
# on top of the drain: TimeoutStopSec= = podman's --stop-timeout + this.
PODMAN_STOP_MARGIN = 5
# The directories systemd would make for StateDirectory= and friends, made here instead (see host_dirs).
_KEPT_DIRS = (("STATE_DIRECTORY", "/var/lib"), ("CACHE_DIRECTORY", "/var/cache"), ("LOGS_DIRECTORY", "/var/log"))


def podman_stop_timeout(spec: UnitSpec) -> int:
    """podman's --stop-timeout (whole seconds): one second past the runtime's own drain deadline, so the
    runtime always finishes (or gives up) before podman sends SIGKILL."""
    return math.ceil(float(spec.stop_timeout)) + 1


def timeout_stop_sec(spec: UnitSpec) -> int:
    """TimeoutStopSec= of a container worker: podman's stop deadline plus podman's own overhead."""
    return podman_stop_timeout(spec) + PODMAN_STOP_MARGIN


def container_name(spec: UnitSpec) -> str:
    """The container's name, one per worker instance (%i); spec.name holds no character podman refuses."""
    return f"sockact-{spec.name}-%i"


def cidfile(spec: UnitSpec) -> str:
    return f"%t/{container_name(spec)}.cid"


def user(spec: UnitSpec) -> tuple[str, str]:
    """(UID, GID) inside the container: --user, else nobody (65534), else root with --no-harden."""
    if spec.user is not None:
        uid, _, gid = spec.user.partition(":")
        return uid, gid or uid
    return ("65534", "65534") if spec.harden else ("0", "0")


def kept_dirs(spec: UnitSpec) -> list[tuple[str, str]]:
    """(variable, absolute path) of the --state-dir, --cache-dir and --logs-dir directories."""
    names = (spec.state_dir, spec.cache_dir, spec.logs_dir)
    return [(variable, f"{root}/{name}") for (variable, root), name in zip(_KEPT_DIRS, names) if name is not None]


def host_dirs(spec: UnitSpec) -> list[str]:
    """Directories made on the host before each start, owned by the container's user.

    Not RuntimeDirectory=/StateDirectory=: systemd makes those for the unit's own user (root, who runs
    podman), and makes them so again before every ExecStop= and ExecStopPost=, under the running
    worker, which could then no longer remove its own scoreboard file (measured).
    """
    return [f"/run/{spec.name}", f"/run/{spec.name}/shm", *(path for _, path in kept_dirs(spec))]


def _words(words: list[str]) -> str:
    return " ".join(escape.exec_word(word) for word in words)


def exec_start_pre(spec: UnitSpec) -> list[str]:
    """The host directories, and no id file left by the last container: podman refuses to overwrite one."""
    uid, gid = user(spec)
    return [_words([INSTALL, "-d", "-m", "0700", "-o", uid, "-g", gid, *host_dirs(spec)]), f"{RM} -f {cidfile(spec)}"]


def run_flags(spec: UnitSpec) -> list[str]:
    """podman run's flags between `run` and the image, without those that carry systemd specifiers."""
    uid, gid = user(spec)
    flags = [
        "--replace",
        "--rm",
        "--detach",
        "--pull=never",
        "--sdnotify=container",
        "--cgroups=disabled",
        "--network=none",
        "--log-driver=passthrough",
        "--ulimit=host",
        "--stop-signal=SIGTERM",
        f"--stop-timeout={podman_stop_timeout(spec)}",
    ]
    if spec.harden:
        flags += ["--read-only", "--cap-drop=all", "--security-opt=no-new-privileges"]
    flags.append(f"--user={uid}:{gid}")
    flags += [
        f"--volume=/run/{spec.name}:{RUNTIME_IN_CONTAINER}",
        f"--volume=/run/{spec.name}/shm:{SCOREBOARD_IN_CONTAINER}",
        f"--env=RUNTIME_DIRECTORY={RUNTIME_IN_CONTAINER}",
    ]
    # Without a value, podman copies the variable from its own environment, which systemd set up:
    # the unit's Environment= lines, the watchdog period and the journal stream podman passes through.
    for key in (ENV_APP, ENV_WORKER, "WATCHDOG_USEC", "JOURNAL_STREAM", *(key for key, _ in spec.env)):
        flags.append(f"--env={key}")
    if spec.env_file is not None:
        flags.append(f"--env-file={spec.env_file}")
    for variable, path in kept_dirs(spec):
        flags += [f"--volume={path}:{path}", f"--env={variable}={path}"]
    if spec.chdir is not None:
        flags.append(f"--workdir={spec.chdir}")
    return flags + ["--entrypoint=sockact"]


def exec_start(spec: UnitSpec, runtime_args: list[str]) -> str:
    """podman run … IMAGE run MODULE:ATTR …: the worker's ExecStart= line, escaped."""
    assert spec.container is not None
    named = f"--name={container_name(spec)} --cidfile={cidfile(spec)}"  # fixed words with specifiers
    return f"{PODMAN} run {named} {_words(run_flags(spec) + [spec.container, *runtime_args])}"


def exec_stop(spec: UnitSpec) -> str:
    """SIGTERM to the container's PID 1 (`sockact run`, which drains), SIGKILL after --stop-timeout."""
    return f"{PODMAN} stop --ignore --cidfile={cidfile(spec)}"


def exec_stop_post(spec: UnitSpec) -> str:
    """Whatever way the worker ended, no container is left behind under its name."""
    return f"-{PODMAN} rm --force --ignore --cidfile={cidfile(spec)}"


# What each podman flag of the sandbox does, and the systemd line it stands for (`sockact generate --explain`).
SANDBOX_FLAGS: tuple[tuple[str, str], ...] = (
    (
        "--read-only",
        "the image's files are read-only, as ProtectSystem=strict makes the host's; podman mounts a "
        "fresh tmpfs on /tmp, /var/tmp and /run",
    ),
    ("--cap-drop=all", "no capability at all, as CapabilityBoundingSet= (empty) gives a worker without a container"),
    ("--security-opt=no-new-privileges", "NoNewPrivileges=yes: no setuid program can raise the worker's rights"),
    (
        "--user=UID:GID",
        "the container's user (nobody, 65534, unless --user says otherwise); it owns /run/NAME and "
        "the --state-dir/--cache-dir/--logs-dir directories, as DynamicUser= would",
    ),
    (
        "--network=none",
        "no network interface but its own loopback: the worker accepts only on the socket systemd "
        "passed in and connects nowhere (PrivateNetwork=yes; a worker without a container keeps the "
        "host's network)",
    ),
    (
        "(always)",
        "private PID, mount, IPC and UTS namespaces, a /dev of its own, read-only /proc/sys and /sys, and "
        "podman's seccomp profile (PrivateMounts=, PrivateIPC=, PrivateDevices=, ProtectHostname=, "
        "ProtectKernelTunables=, SystemCallFilter=)",
    ),
)


def explain(spec: UnitSpec) -> list[str]:
    """The paragraphs of `--explain` for a container worker: its sandbox is podman's."""
    if not spec.harden:
        return [
            f"--no-harden: the container runs as root ({user(spec)[0]}) inside, with podman's default "
            "capabilities and a writable image; it keeps --network=none and podman's namespaces."
        ]
    paragraphs = [
        f"Sandbox of {spec.name}@.service: the worker runs in a podman container of {spec.container}. "
        "The unit runs podman as root (podman cannot run under DynamicUser= or systemd's file-system "
        "sandbox), so systemd-analyze security scores the unit, not the container; the container's "
        "sandbox is podman's flags:"
    ]
    for flag, does in SANDBOX_FLAGS:
        paragraphs.append(f"{flag}\n    {does}.")
    return paragraphs
