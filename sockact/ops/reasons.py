"""Why a worker is not running, in words: its exit status named, the app's own last error line, the next step.

The facts come from three places. ``systemctl show`` (readable by anyone) gives the last exit
(ExecMainCode=, ExecMainStatus=, Result=) and STATUS=, where a worker that cannot start writes the
app's reason while it waits to try again (sockact.runtime.boot). The journal (root or the
systemd-journal group) gives the line that says why: the app's own error, or what systemd's
process setup logged before it gave up ("Failed to locate executable ...", "Changing to the
requested working directory failed: ..."). Only lines of the worker's last failed invocation count,
so an error from yesterday's run cannot pass for today's reason.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from ..contract import EXIT_CANNOT_START, app_reason
from ..runtime.recycle import RECYCLE_EXIT
from .systemctl import Props, Record, message

# systemd's catalog ids (sd-messages.h).
PROCESS_EXITED = "98e322203f7a4ed290d09fe03c09fe15"  # "Main process exited, code=..., status=..."
UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"  # "Failed with result '...'"
UNIT_DEACTIVATED = "7ad2d189f7e94e70a38c781354912448"  # "Deactivated successfully"
JOB_FAILED = "be02cf6855d2428ba40df7e9d022f03d"  # "Failed to start ..."
SPAWN_FAILED = "641257651c1b4ec9a8624d7a40a9e1e7"  # "Failed at step EXEC spawning ...: ..."
RESTART_SCHEDULED = "5eb03494b6584870a536b337290809b3"  # "Scheduled restart job, restart counter is at N"
# systemd's own lines that say that something failed, never why.
_GENERIC = {PROCESS_EXITED, UNIT_FAILED, UNIT_DEACTIVATED, JOB_FAILED, RESTART_SCHEDULED}
_GENERIC_TEXT = (
    "Start request repeated too quickly",
    "Failed to start ",
    "Scheduled restart job",
    "Failed with result",
    "Main process exited",
)
ERROR = 3  # syslog priority err: the app's and systemd's error lines
INFO = 6  # an --exec app's traceback on stderr is stored at info
_RETRYING = re.compile(r"\s+— retrying in [0-9.]+ s \(attempt \d+\)$")  # sockact.runtime.boot's suffix
_UNIT_PREFIX = re.compile(r"^[^\s:]+@[0-9]+\.service: ")  # systemd's lines start with the unit's name

# systemd's own exit statuses (systemd.exec(5), "Process Exit Codes"): the step of the process setup
# that failed before the app ran, and what to look at.
SETUP_FAILURES: dict[int, tuple[str, str]] = {
    200: ("CHDIR", "cannot enter the working directory (--chdir)"),
    202: ("FDS", "cannot pass the listening sockets"),
    203: ("EXEC", "cannot execute the interpreter"),
    204: ("MEMORY", "out of memory while setting up the process"),
    209: ("STDOUT", "cannot connect its output to the journal"),
    210: ("CHROOT", "cannot change its root directory"),
    214: ("SETSCHEDULER", "cannot set its scheduling policy"),
    216: ("GROUP", "the group does not exist (--user)"),
    217: ("USER", "the user does not exist (--user)"),
    218: ("CAPABILITIES", "cannot drop its capabilities (sandbox)"),
    219: ("CGROUP", "cannot set up its control group"),
    226: ("NAMESPACE", "cannot set up the sandbox's view of the file system (a --writable or --chdir path missing?)"),
    228: ("SECCOMP", "cannot install its system call filter (sandbox)"),
    233: ("RUNTIME_DIRECTORY", "cannot create its runtime directory"),
    235: ("CHOWN", "cannot hand its sockets or directories to the workers' user"),
    238: ("STATE_DIRECTORY", "cannot create its state directory (--state-dir)"),
    239: ("CACHE_DIRECTORY", "cannot create its cache directory (--cache-dir)"),
    240: ("LOGS_DIRECTORY", "cannot create its logs directory (--logs-dir)"),
    243: ("CREDENTIALS", "cannot set up its credentials"),
}
RESULTS = {  # systemd's Result= of a unit whose process was killed or never became ready
    "watchdog": "its serving loop stopped answering: the watchdog killed it (WatchdogSec=, --watchdog)",
    "oom-kill": "the kernel killed it for memory (MemoryMax=, --memory-max)",
    "timeout": "it did not become ready in time (TimeoutStartSec=)",
    "start-limit-hit": "systemd stopped restarting it (it failed too often in a short time)",
    "core-dump": "it crashed (core dumped)",
}
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3  # ExecMainCode=: si_code of the main process's exit


@dataclass(frozen=True)
class Exit:
    """How a process ended, as systemd tells it."""

    code: str  # "exited", "killed" or "dumped" (the journal's EXIT_CODE=)
    status: int  # the exit status, or the signal number
    result: str = ""  # the unit's Result=, when known

    @property
    def failed(self) -> bool:
        return self.code != "exited" or self.status != 0

    def named(self) -> str:
        """'exit 203/EXEC', 'exit 3', 'SIGKILL'."""
        if self.code == "exited":
            setup = SETUP_FAILURES.get(self.status)
            return f"exit {self.status}/{setup[0]}" if setup else f"exit {self.status}"
        try:
            name = signal.Signals(self.status).name
        except ValueError:
            name = f"signal {self.status}"
        return name + (", core dumped" if self.code == "dumped" else "")


@dataclass(frozen=True)
class Why:
    """A worker's reason for not running: words, the line that says it (if known), the next step."""

    reason: str
    line: str | None
    next_step: str

    def text(self) -> str:
        return f"{self.reason}: {self.line}" if self.line else self.reason


def exit_from_props(props: Props) -> Exit | None:
    """The main process's last exit from ``systemctl show`` (None while it runs or before any exit)."""
    code = {CLD_EXITED: "exited", CLD_KILLED: "killed", CLD_DUMPED: "dumped"}.get(int(props.get("ExecMainCode") or 0))
    if code is None:
        return None
    return Exit(code, int(props.get("ExecMainStatus") or 0), props.get("Result", ""))


def clean_line(text: str) -> str:
    """One line: the first line of a message, without sockact.runtime.boot's "— retrying in" suffix."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _UNIT_PREFIX.sub("", _RETRYING.sub("", first))


def explain(
    name: str,
    state: str,
    status_text: str,
    last: Exit | None,
    line: str | None,
    *,
    journal: bool,
    exec_app: bool = False,
    paths: Props | None = None,
) -> Why | None:
    """Why a worker in `state` is not serving, or None when nothing failed (running, or stopped cleanly).

    `last` is its main process's last exit, `line` the journal's line about that exit (None when the
    journal holds none or cannot be read: `journal` says which); `paths` the unit's WorkingDirectory=
    and ExecStart=, to name the directory or program systemd could not use.
    """
    logs = f"`sockact logs {name}`" if journal else f"`sudo sockact logs {name}`"
    own = app_reason(status_text)
    if own is not None:
        return Why(
            "the app failed to start",
            own,
            f"fix the app ({logs} has its full error); the workers try again by themselves",
        )
    if state in ("running", "not serving") or last is None or not last.failed:
        return None
    if last.code == "exited":
        why = _exited(name, last, line, logs, exec_app=exec_app, paths=paths or {})
    else:
        words = RESULTS.get(last.result, f"killed by {last.named()}")
        why = Why(f"{words} ({last.named()})", line, f"see {logs} for what it was doing")
    # A failed unit stays down: systemd's "Start request repeated too quickly" (252 leaves Result= at
    # exit-code then), or a failure that Restart= does not cover.
    if state == "failed" or last.result == "start-limit-hit":
        return Why(
            f"{why.reason}; {RESULTS['start-limit-hit']}",
            why.line,
            f"{why.next_step}; then `sudo sockact start {name}`",
        )
    return why


def program(exec_start: str) -> str:
    """The program of systemd's ExecStart= property ('{ path=/srv/venv/bin/python3 ; argv[]=... }')."""
    found = re.search(r"path=([^ ;]+)", exec_start)
    return found.group(1) if found else ""


def _exited(name: str, last: Exit, line: str | None, logs: str, *, exec_app: bool, paths: Props) -> Why:
    if last.status == 203:
        path = program(paths.get("ExecStart", ""))
        what = "cannot execute the command" if exec_app else "cannot execute the interpreter"
        what = f"{what} {path}" if path else what
        what += " (--exec)" if exec_app else " (--python)"
        return Why(
            f"{what} ({last.named()})",
            line,
            "give a path the workers' user can execute: not under /root or /home (the sandbox hides "
            "them), and for a venv one made with /usr/bin/python3 -m venv; then reinstall",
        )
    directory = paths.get("WorkingDirectory", "").lstrip("!")  # "!" marks an optional one
    if last.status == 200 and directory:
        return Why(
            f"cannot enter the working directory {directory} (--chdir) ({last.named()})",
            line,
            f"create {directory} or give another --chdir, then reinstall (`sudo sockact install {name} ...`)",
        )
    if last.status in SETUP_FAILURES:
        return Why(
            f"{SETUP_FAILURES[last.status][1]} ({last.named()})",
            line,
            f"fix that path or option and reinstall (`sudo sockact install {name} ...`); {logs} has more",
        )
    if last.status == EXIT_CANNOT_START and not exec_app:
        return Why(
            f"the app failed to start ({last.named()})",
            line,
            f"fix the app ({logs} has its full error); the workers try again by themselves",
        )
    if last.status == RECYCLE_EXIT and not exec_app:
        return Why(
            f"recycled (--max-requests or --max-rss, {last.named()})",
            line,
            "nothing to do: systemd starts it again at once",
        )
    return Why(f"the app exited with status {last.status}", line, f"fix the app ({logs} has more)")


# --- the journal's line ----------------------------------------------------------------------------


def _invocation(record: Record) -> str:
    return str(record.get("_SYSTEMD_INVOCATION_ID") or record.get("INVOCATION_ID") or "")


def _is_generic(record: Record) -> bool:
    if record.get("MESSAGE_ID") in _GENERIC:
        return True
    # systemd's lines start with the unit's name ("web@1.service: Start request repeated too quickly.")
    return _from_systemd(record) and any(marker in message(record) for marker in _GENERIC_TEXT)


def _from_systemd(record: Record) -> bool:
    return str(record.get("_PID", "")) == "1"


def _priority(record: Record) -> int:
    text = str(record.get("PRIORITY", INFO))
    return int(text) if text.isdigit() else INFO


def reason_line(records: Iterable[Record]) -> str | None:
    """The line that says why a unit's main process last failed, from its journal records (newest first).

    Only records of the invocation whose exit is the newest count. Preferred: an error line that is
    not systemd's generic "failed" (the app's own error, or the process setup's "Failed to locate
    executable ..." over its "Failed at step EXEC spawning ..."); else the app's last line of any
    priority up to info (an --exec app's traceback ends with the exception on stderr).
    """
    records = list(records)
    exited = next((record for record in records if record.get("MESSAGE_ID") == PROCESS_EXITED), None)
    if exited is None:
        return None
    invocation = _invocation(exited)
    newer = records.index(exited)
    older = next(
        (i for i, record in enumerate(records[newer + 1 :], newer + 1) if record.get("MESSAGE_ID") == PROCESS_EXITED),
        len(records),
    )
    # Without invocation ids (an old journald), the records between this exit and the one before it.
    window = [record for record in records[newer:older] if not invocation or _invocation(record) == invocation]
    told = [record for record in window if not _is_generic(record) and message(record).strip()]
    errors = [record for record in told if _priority(record) <= ERROR]
    specific = [record for record in errors if record.get("MESSAGE_ID") != SPAWN_FAILED]
    own = [record for record in told if not _from_systemd(record) and _priority(record) <= INFO]
    chosen = specific or errors or own
    return clean_line(message(chosen[0])) if chosen else None


def unit_of(name: str, record: Record) -> str:
    """The unit a record is about: a worker's own lines, systemd's lines about it and its process setup's."""
    unit = str(record.get("_SYSTEMD_UNIT", ""))
    if _from_systemd(record) or not unit.startswith(f"{name}@"):
        unit = str(record.get("UNIT") or unit)
    return unit


def reason_lines(name: str, records: Iterable[Record], units: Iterable[str]) -> dict[str, str]:
    """unit -> the line that says why it last failed, from journal records of several units (newest first)."""
    wanted = set(units)
    per_unit: dict[str, list[Record]] = {unit: [] for unit in wanted}
    for record in records:
        unit = unit_of(name, record)
        if unit in wanted:
            per_unit[unit].append(record)
    found = {unit: reason_line(unit_records) for unit, unit_records in per_unit.items()}
    return {unit: line for unit, line in found.items() if line}
