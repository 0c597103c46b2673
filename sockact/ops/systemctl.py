"""The one place that runs systemctl and journalctl (through a runner a test can replace); a failure becomes a
one-line SystemdError or PermissionNeeded."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import PermissionNeeded, SockactError, SystemdError

Props = dict[str, str]
Record = dict[str, Any]

# Variables that would page, colour or localise the output we parse.
_ENV_OVERRIDES = {"SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
_UNREACHABLE = (
    "has not been booted with systemd",
    "Failed to connect to bus",
    "Failed to connect to system scope bus",
    "Transport endpoint is not connected",
)
_DENIED = ("Access denied", "Interactive authentication required", "Permission denied")
_QUIET_FLAGS = ("--no-ask-password", "--no-pager", "--quiet")  # ours, left out of error messages
# Groups whose members may read the whole system journal (journalctl(1)).
JOURNAL_GROUPS = ("systemd-journal", "adm", "wheel")
DEFAULT_TIMEOUT = 300.0  # a blocking stop or restart waits for drains and READY=1; systemd has its own limits


def _env() -> dict[str, str]:
    return {**os.environ, **_ENV_OVERRIDES}


def failure(argv: Sequence[str], stderr: str) -> SockactError:
    """The one-line error for a systemctl/journalctl call that failed with this stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith(("See ", "Hint:"))), "no message")
    command = shlex.join(arg for arg in argv if arg not in _QUIET_FLAGS)
    if any(marker in stderr for marker in _UNREACHABLE):
        return SystemdError(f"systemd is not reachable ({detail}); sockact needs a running systemd system manager")
    if any(marker in stderr for marker in _DENIED):
        return PermissionNeeded(f"`{command}` was refused ({detail}); run the sockact command with sudo")
    return SystemdError(f"`{command}` failed: {detail}")


Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def _subprocess(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env=_env(), timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


_runner: Runner = _subprocess


@contextlib.contextmanager
def runner(replacement: Runner) -> Iterator[None]:
    """Every systemctl and journalctl call inside the block goes to replacement instead of a process:
    the operator commands' logic, tested against a scripted systemd in milliseconds."""
    global _runner
    previous, _runner = _runner, replacement
    try:
        yield
    finally:
        _runner = previous


def run(
    argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one systemctl/journalctl command and capture its output as text."""
    try:
        result = _runner(list(argv), timeout)
    except FileNotFoundError:
        raise SystemdError(f"{argv[0]} is not installed; sockact needs systemd") from None
    except subprocess.TimeoutExpired:
        raise SystemdError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from None
    if check and result.returncode != 0:
        raise failure(argv, result.stderr)
    return result


def systemctl(*args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """``systemctl ARGS`` (never asking for a password); its stdout."""
    return run(["systemctl", "--no-ask-password", "--no-pager", *args], timeout=timeout).stdout


def try_systemctl(*args: str) -> bool:
    """``systemctl ARGS`` for tidying up (reset-failed, disable) where failure changes nothing; True if it worked."""
    return run(["systemctl", "--no-ask-password", "--no-pager", *args], check=False).returncode == 0


def daemon_reload() -> None:
    systemctl("daemon-reload")


def show(units: Sequence[str], props: Sequence[str]) -> list[Props]:
    """``systemctl show -p PROPS UNITS``: one dict per unit (globs match loaded units), keyed by property.

    ``Id`` is always included so callers can tell the blocks apart. A property given several
    times (``Listen=``) has its values joined by newlines.
    """
    wanted = ",".join(dict.fromkeys(["Id", *props]))
    output = systemctl("show", f"--property={wanted}", "--", *units)
    return [parse_show_block(block) for block in output.split("\n\n") if block.strip()]


def parse_show_block(block: str) -> Props:
    props: Props = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = f"{props[key]}\n{value}" if key in props else value
    return props


def show_by_id(units: Sequence[str], props: Sequence[str]) -> dict[str, Props]:
    """Like show(), keyed by unit name; a glob and an explicit name matching the same unit collapse."""
    return {block["Id"]: block for block in show(units, props) if block.get("Id")}


def can_read_journal() -> bool:
    """root, or a member of a group that journald lets read every unit's logs."""
    if os.geteuid() == 0:
        return True
    gids = set(os.getgroups()) | {os.getegid()}
    for group in JOURNAL_GROUPS:
        try:
            if grp.getgrnam(group).gr_gid in gids:
                return True
        except KeyError:
            continue
    return False


def journal_args(*args: str) -> list[str]:
    return ["journalctl", "--no-pager", "--quiet", *args]


def journal_records(*args: str, timeout: float = 60) -> list[Record]:
    """``journalctl -o json ARGS`` parsed; an empty list when nothing matches or the journal is not readable."""
    result = run(journal_args("--output=json", *args), timeout=timeout, check=False)
    if result.returncode != 0 and not result.stdout:
        if "No journal files were found" in result.stderr:
            return []
        raise failure(journal_args(*args), result.stderr)
    return list(parse_records(result.stdout.splitlines()))


def parse_records(lines: Iterator[str] | Sequence[str]) -> Iterator[Record]:
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            record: Record = json.loads(line)
            yield record


def journal_cursor() -> str | None:
    """The cursor of the newest journal entry, to read only what comes after it."""
    records = journal_records("--lines=1", "--reverse")
    return str(records[0]["__CURSOR"]) if records else None


def message(record: Record) -> str:
    """A record's MESSAGE as text: journald stores non-UTF-8 messages as a list of byte values."""
    value = record.get("MESSAGE")
    if isinstance(value, list):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)
