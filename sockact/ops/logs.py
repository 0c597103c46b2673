"""`sockact logs`: every worker's journal merged, each line tagged with its worker and coloured by priority."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from ..contract import instance_index
from ..errors import PermissionNeeded, SystemdError
from .app import App, resolve
from .systemctl import Record, can_read_journal, failure, journal_args, message, parse_records

RESET = "\x1b[0m"
PRIORITY_COLOURS = {
    0: "\x1b[1;31m",
    1: "\x1b[1;31m",
    2: "\x1b[1;31m",
    3: "\x1b[31m",
    4: "\x1b[33m",
    5: "\x1b[1m",
    7: "\x1b[2m",
}
TAG_COLOURS = ("\x1b[36m", "\x1b[32m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[96m")


@dataclass(frozen=True)
class LogQuery:
    name: str
    follow: bool = False
    lines: int | None = None
    worker: int | None = None
    priority: str | None = None
    since: str | None = None
    as_json: bool = False


def journal_argv(query: LogQuery, app: App) -> list[str]:
    """journalctl's arguments for the query: the instances (by glob and by name), the socket and the target."""
    if query.worker is not None:
        units = [app.instance(query.worker)]
    else:
        # The glob finds instances the journal knows; the names add wanted ones that never logged.
        units = [f"{app.name}@*.service", *app.instances, app.socket_unit, app.target_unit]
    lines = query.lines if query.lines is not None else (10 if query.follow else 20)
    argv = journal_args("--output=json", f"--lines={lines}", *(f"--unit={unit}" for unit in units))
    argv += ["--follow"] if query.follow else []
    argv += [f"--priority={query.priority}"] if query.priority else []
    argv += [f"--since={query.since}"] if query.since else []
    return argv


def source(name: str, record: Record) -> str:
    """The unit a record is about: the worker's own lines and systemd's lines about it get the same tag."""
    unit = str(record.get("_SYSTEMD_UNIT", ""))
    if str(record.get("_PID", "")) == "1" or not unit.startswith(name):
        unit = str(record.get("UNIT", unit))
    return unit.removesuffix(".service")


def format_record(name: str, record: Record, *, colour: bool) -> str:
    """'2026-01-01 12:00:00 demo@2  message', one output line per message line."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(record.get("__REALTIME_TIMESTAMP", 0)) / 1e6))
    tag = source(name, record).ljust(len(name) + len(".socket"))  # one column for every source
    text = message(record)
    if str(record.get("_PID", "")) == "1":
        text = f"systemd: {text}"
    if colour:
        index = instance_index(name, f"{tag.rstrip()}.service")
        tag_colour = TAG_COLOURS[(index - 1) % len(TAG_COLOURS)] if index else "\x1b[1m"
        tag = f"{tag_colour}{tag}{RESET}"
        priority = int(record.get("PRIORITY", 6))
        if priority in PRIORITY_COLOURS:
            text = f"{PRIORITY_COLOURS[priority]}{text}{RESET}"
    return "\n".join(f"{stamp} {tag}  {line}" for line in (text.splitlines() or [""]))


def write_records(
    name: str, lines: Iterable[str], *, as_json: bool, colour: bool, out: TextIO, seen: list[str] | None = None
) -> None:
    """Print the journal's lines; each printed message also goes to `seen`, when given."""
    for line in lines:
        if as_json:
            out.write(line if line.endswith("\n") else line + "\n")
            continue
        for record in parse_records([line]):
            out.write(format_record(name, record, colour=colour) + "\n")
            if seen is not None:
                seen.append(message(record))
        out.flush()  # with --follow, each line shows as it arrives


def stream(argv: list[str], name: str, *, as_json: bool, out: TextIO, seen: list[str] | None = None) -> None:
    colour = out.isatty() and "NO_COLOR" not in os.environ
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise SystemdError("journalctl is not installed; sockact needs systemd's journal") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        write_records(name, proc.stdout, as_json=as_json, colour=colour, out=out, seen=seen)
    finally:
        if proc.poll() is None:
            proc.terminate()
        _, err = proc.communicate()
    if proc.returncode not in (0, -15):
        raise failure(argv, err)


def show_logs(query: LogQuery, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    app = resolve(query.name)
    if not can_read_journal():
        raise PermissionNeeded(
            f"reading {query.name}'s logs needs root or the systemd-journal group: run `sudo sockact logs {query.name}`"
        )
    shown: list[str] = []
    try:
        stream(journal_argv(query, app), query.name, as_json=query.as_json, out=out, seen=shown)
    except KeyboardInterrupt:  # the usual way to end --follow
        return 0
    except BrokenPipeError:  # the reader (e.g. `head`) has seen enough
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not query.as_json:
        err.writelines(unseen_reasons(query.name, "\n".join(shown), query.worker))
    return 0


def unseen_reasons(name: str, printed: str, only: int | None = None) -> list[str]:
    """A line per failing worker (or worker `only`) whose reason the printed journal lines do not show:
    when a worker restarts quickly, systemd's own lines about it can push the app's out of the last N."""
    from .status import failing_workers

    lines = []
    for worker in failing_workers(name):
        if only is not None and worker.instance != only:
            continue
        reason = worker.reason or ""
        detail = reason.split(": ", 1)[-1]
        if detail not in printed:
            lines.append(f"sockact: {name}@{worker.instance} ({worker.state}): {reason}\n")
    return lines
