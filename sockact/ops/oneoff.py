"""`sockact exec`: one command run once as the workers run: their user, environment, directories and sandbox."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import PermissionNeeded, SystemdError, UsageError
from .app import require_ours, resolve
from .systemctl import journal_records, message, show_by_id, systemctl, try_systemctl

INSTANCE = "exec"  # what %i stands for in the one-off's settings: SOCKACT_WORKER=exec tells code it is not a worker
# systemd's PATH for services when the manager's environment has none (Debian 12's build).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# [Service] settings that make a worker a supervised server of the socket. A one-off command takes
# none of them: systemd-run decides its type, its stdio and how it is waited for.
SERVER_ONLY = frozenset(
    {
        "Type",
        "NotifyAccess",
        "Sockets",
        "NonBlocking",
        "BusName",
        "PIDFile",
        "GuessMainPID",
        "RemainAfterExit",
        "ExitType",
        "OOMPolicy",
        "OpenFile",
        "FileDescriptorStoreMax",
        "FileDescriptorStorePreserve",
        "ExecCondition",
        "ExecStartPre",
        "ExecStart",
        "ExecStartPost",
        "ExecReload",
        "ExecStop",
        "ExecStopPost",
        "Restart",
        "RestartSec",
        "RestartSteps",
        "RestartMaxDelaySec",
        "RestartMode",
        "RestartPreventExitStatus",
        "RestartForceExitStatus",
        "SuccessExitStatus",
        "WatchdogSec",
        "WatchdogSignal",
        "ReloadSignal",
        "TimeoutSec",
        "TimeoutStartSec",
        "TimeoutStopSec",
        "TimeoutAbortSec",
        "TimeoutStartFailureMode",
        "TimeoutStopFailureMode",
        "RuntimeMaxSec",
        "RuntimeRandomizedExtraSec",
        "KillMode",
        "KillSignal",
        "RestartKillSignal",
        "FinalKillSignal",
        "SendSIGKILL",
        "SendSIGHUP",
        "StandardInput",
        "StandardOutput",
        "StandardError",
        "StandardInputText",
        "StandardInputData",
        "TTYPath",
        "TTYReset",
        "TTYVHangup",
        "TTYVTDisallocate",
        "USBFunctionDescriptors",
        "USBFunctionStrings",
    }
)
# Settings whose values systemd expands %-specifiers in (the rest, e.g. MemoryMax=50%, are taken as written).
# systemd-run passes values over D-Bus, where nothing is expanded, so they are expanded here.
SPECIFIER_KEYS = frozenset(
    {
        "Environment",
        "EnvironmentFile",
        "PassEnvironment",
        "UnsetEnvironment",
        "WorkingDirectory",
        "RootDirectory",
        "User",
        "Group",
        "SupplementaryGroups",
        "SyslogIdentifier",
        "StateDirectory",
        "CacheDirectory",
        "LogsDirectory",
        "RuntimeDirectory",
        "ConfigurationDirectory",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "BindPaths",
        "BindReadOnlyPaths",
        "TemporaryFileSystem",
        "LoadCredential",
        "SetCredential",
        "ExecStart",
    }
)
# exit statuses systemd itself gives a process it could not set up (systemd.exec(5), "Process exit codes")
SETUP_FAILURES = {
    200: "CHDIR",
    203: "EXEC",
    209: "STDOUT",
    210: "CHROOT",
    214: "SETSCHEDULER",
    216: "GROUP",
    217: "USER",
    218: "CAPABILITIES",
    226: "NAMESPACE",
    228: "SECCOMP",
    233: "RUNTIME_DIRECTORY",
    238: "STATE_DIRECTORY",
    239: "CACHE_DIRECTORY",
    240: "LOGS_DIRECTORY",
}


@dataclass(frozen=True)
class Setting:
    """One ``Key=value`` line of a [Service] section, where it came from, value as written."""

    key: str
    value: str
    origin: str


def service_settings(text: str, origin: str) -> Iterator[Setting]:
    """The [Service] assignments of one unit file or drop-in, in order (continuation lines joined)."""
    section, pending = "", ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith(("#", ";")):  # systemd drops comment lines, also inside a continued line
            continue
        line = f"{pending} {stripped}" if pending else stripped
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            yield Setting(key.strip(), value.strip(), origin)


def expand(setting: Setting, name: str) -> str:
    """A setting's value with the %-specifiers systemd would expand for NAME@exec.service."""
    if setting.key not in SPECIFIER_KEYS:
        return setting.value
    known = {
        "%": "%",
        "i": INSTANCE,
        "I": INSTANCE,
        "p": name,
        "P": name,
        "n": f"{name}@{INSTANCE}.service",
        "N": f"{name}@{INSTANCE}",
        "t": "/run",
        "S": "/var/lib",
        "C": "/var/cache",
        "L": "/var/log",
        "T": "/tmp",
        "V": "/var/tmp",
        "E": "/etc",
    }
    parts, rest = [], setting.value
    while "%" in rest:
        before, _, rest = rest.partition("%")
        letter, rest = rest[:1], rest[1:]
        if letter not in known:
            raise UsageError(
                f"{setting.origin}: {setting.key}={setting.value} uses the specifier %{letter}, "
                "which sockact exec cannot expand; write the value out in a drop-in"
            )
        parts += [before, known[letter]]
    return "".join(parts) + rest


def one_off_properties(settings: Iterable[Setting], name: str, path: str | None) -> list[str]:
    """``Key=value`` for ``systemd-run -p``: the workers' settings minus what only a server needs, plus
    ``path`` (given only when the unit sets no PATH of its own)."""
    props: list[str] = []
    runtime_directory = False
    for setting in settings:
        if setting.key in SERVER_ONLY:
            continue
        value = expand(setting, name)
        runtime_directory = runtime_directory or (setting.key == "RuntimeDirectory" and bool(value))
        props.append(f"{setting.key}={value}")
    if runtime_directory:
        # The running workers share this directory (their boot-failure counters live there): the one-off
        # must never remove it when it ends, whatever the unit says.
        props.append("RuntimeDirectoryPreserve=yes")
    if path:
        props.append(f"Environment=PATH={path}")
    return props


def last_value(settings: Iterable[Setting], key: str, name: str) -> str:
    """The effective value of a single-valued setting (the last assignment wins), expanded; "" if unset."""
    values = [expand(setting, name) for setting in settings if setting.key == key]
    return values[-1] if values else ""


def interpreter_dir(exec_start: str) -> str | None:
    """The directory of ExecStart='s program (the venv's bin for the built-in runtime)."""
    try:
        words = shlex.split(exec_start.lstrip("-@:+!").replace("$$", "$"))
    except ValueError:
        return None
    return os.path.dirname(words[0]) if words and words[0].startswith("/") else None


def unit_path(settings: Sequence[Setting], name: str) -> str | None:
    """PATH as the unit's Environment= lines set it, if they do."""
    found = None
    for setting in settings:
        if setting.key != "Environment":
            continue
        try:
            words = shlex.split(expand(setting, name))
        except ValueError:
            continue
        found = next((word[5:] for word in reversed(words) if word.startswith("PATH=")), found)
    return found


def command_path(settings: Sequence[Setting], name: str, manager_path: str) -> tuple[str, str | None]:
    """(PATH the command sees, PATH to add to its environment): the interpreter's directory first.

    With a venv interpreter, `python`, `pip` and the app's own scripts are then the workers' ones.
    """
    own = unit_path(settings, name)
    if own is not None:
        return own, None
    path = manager_path or DEFAULT_PATH
    directory = interpreter_dir(last_value(settings, "ExecStart", name))
    if directory and directory not in path.split(":"):
        path = f"{directory}:{path}"
    return path, path


def resolve_command(argv: Sequence[str], path: str, workdir: str) -> list[str]:
    """argv with its program made absolute: looked up in the workers' PATH, or relative to their directory.

    systemd-run would otherwise look a bare name up in the caller's PATH (root's), not the workers'.
    """
    program = argv[0]
    if "/" in program:
        base = workdir.lstrip("-")
        found = os.path.join(base if base.startswith("/") else "/", program)
        if not os.access(found, os.X_OK) or os.path.isdir(found):
            raise UsageError(f"{program!r}: no executable file {found}")
        return [os.path.normpath(found), *argv[1:]]
    for directory in path.split(":"):
        candidate = os.path.join(directory, program)
        if directory.startswith("/") and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return [candidate, *argv[1:]]
    raise UsageError(f"{program!r} is not a command in the workers' PATH ({path}); give its full path")


def stdio_mode(streams: Sequence[TextIO]) -> str:
    """--pty when sockact runs on a terminal (a shell, createsuperuser's prompts, Ctrl-C), else --pipe,
    which hands our own stdin, stdout and stderr to the command (pipelines, redirections, tests)."""

    def is_tty(stream: TextIO) -> bool:
        try:
            return os.isatty(stream.fileno())
        except (AttributeError, OSError, ValueError):
            return False

    return "--pty" if all(is_tty(stream) for stream in streams) else "--pipe"


def no_env_expansion(argv: Sequence[str]) -> list[str]:
    """systemd expands $VAR and ${VAR} in a transient ExecStart=; "$$" is its escape for a plain "$"."""
    return [word.replace("$", "$$") for word in argv]


def systemd_run_argv(name: str, unit: str, props: Sequence[str], argv: Sequence[str], mode: str) -> list[str]:
    words = [
        "systemd-run",
        "--quiet",
        "--no-ask-password",
        "--collect",
        "--wait",
        mode,
        f"--unit={unit}",
        f"--description={name}: one-off command (sockact exec)",
    ]
    words += [f"--property={prop}" for prop in props]
    return [*words, "--", *no_env_expansion(argv)]


@dataclass(frozen=True)
class Template:
    """The files systemd builds NAME@.service from: the fragment, then drop-ins in the order it reads them."""

    fragment: str
    drop_ins: tuple[str, ...]

    def settings(self) -> list[Setting]:
        found: list[Setting] = []
        for path in (self.fragment, *self.drop_ins):
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise SystemdError(f"cannot read {path}: {exc.strerror}") from None
            found += service_settings(text, path)
        return found


def template_of(name: str) -> Template:
    """NAME@.service as systemd loaded it; only a unit sockact wrote."""
    unit = f"{name}@1.service"
    props = show_by_id([unit], ["LoadState", "FragmentPath", "DropInPaths", "NeedDaemonReload"]).get(unit, {})
    fragment = props.get("FragmentPath", "")
    if props.get("LoadState") != "loaded" or not fragment:
        raise UsageError(
            f"{name} has no worker unit {name}@.service loaded ({props.get('LoadState') or 'not-found'}); "
            f"reinstall it with `sudo sockact install {name} ...`"
        )
    require_ours(f"{name}@.service", fragment)
    if props.get("NeedDaemonReload") == "yes":
        sys.stderr.write(
            f"sockact: note: {fragment} changed since systemd loaded it; the command runs with the "
            "file as it is now, the workers with the old one until `sudo systemctl daemon-reload`\n"
        )
    return Template(fragment, tuple(props.get("DropInPaths", "").split()))


def manager_path() -> str:
    """PATH from the service manager's own environment, which every service inherits."""
    for line in systemctl("show-environment").splitlines():
        if line.startswith("PATH="):
            return line[5:]
    return DEFAULT_PATH


def setup_failure(unit: str, status: int) -> str | None:
    """systemd's own line about why it could not start the command, when the status is one of its own."""
    if status not in SETUP_FAILURES:
        return None
    lines = [message(record) for record in journal_records(f"--unit={unit}", "--lines=30")]
    reason = next((line for line in lines if "Failed to" in line or "Failed at step" in line), None)
    if reason is None:  # the command itself exited with that status
        return None
    return (
        f"systemd could not start the command as the workers run (exit {status}/{SETUP_FAILURES[status]}): "
        f"{reason.split(': ', 1)[-1]}"
    )


def wait(process: subprocess.Popen[bytes], unit: str) -> int:
    """systemd-run's exit status (the command's own). Ctrl-C on a pipe reaches only us and systemd-run,
    not the command (PID 1 started it): stop the unit, so nothing keeps running in the background."""
    while True:
        try:
            status = process.wait()
        except KeyboardInterrupt:
            try_systemctl("stop", "--no-block", f"{unit}.service")
            continue
        return 128 - status if status < 0 else status  # killed by signal N: 128+N, as a shell says


def exec_command(name: str, command: Sequence[str], err: TextIO = sys.stderr) -> int:
    """Run command once with the workers' user, environment, directories and sandbox; its exit status."""
    if not command:
        raise UsageError(
            f"give the command to run after --, e.g. `sudo sockact exec {name} -- python3 manage.py migrate`"
        )
    if os.geteuid() != 0:
        raise PermissionNeeded(
            f"exec starts the command as a systemd unit with the workers' user and sandbox, "
            f"which needs root: run `sudo sockact exec {name} -- {shlex.join(command)}`"
        )
    resolve(name)
    settings = template_of(name).settings()
    seen_path, added_path = command_path(settings, name, manager_path())
    argv = resolve_command(command, seen_path, last_value(settings, "WorkingDirectory", name))
    unit = f"{name}-exec-{os.getpid()}"
    run_argv = systemd_run_argv(
        name,
        unit,
        one_off_properties(settings, name, added_path),
        argv,
        stdio_mode((sys.stdin, sys.stdout, sys.stderr)),
    )
    try:
        process = subprocess.Popen(run_argv)
    except FileNotFoundError:
        raise SystemdError("systemd-run is not installed; sockact exec needs it (package systemd)") from None
    status = wait(process, unit)
    reason = setup_failure(unit, status)
    if reason:
        err.write(f"sockact: {reason}\n")
    return status
