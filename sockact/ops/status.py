"""`sockact status`: one app's socket and workers, read from systemd, the journal, the kernel and psutil.

``sockact status NAME --json`` prints one JSON document (``--watch`` prints one per refresh, one per line)::

    {
      "schema": "sockact-status/1",
      "app": "demo",
      "time": 1767000000.5,                       # unix seconds when the facts were read
      "target": {"unit": "demo.target", "state": "active", "workers_wanted": 2},
      "socket": {"unit": "demo.socket", "state": "active", "sub_state": "running",
                 "enabled": "enabled",            # systemd's UnitFileState
                 "listen": [{"address": "[::]:8000", "type": "Stream",
                             "backlog": 0}]},     # connections waiting to be accepted now; null if unknown
      "workers": [{
        "instance": 1, "unit": "demo@1.service",
        "wanted": true,                           # listed in Wants= of demo.target
        "state": "running",                       # running|not serving|starting|retrying|restarting|draining|
                                                  # stopped|failed
        "not_serving": null,                      # why a running worker serves nothing, from STATUS=:
                                                  # "10 of 10 threads stuck for 45 s", "event loop blocked for 12 s"
        "threads_stuck": null,                    # WSGI threads past the request timeout (null: none, or ASGI)
        "active_state": "active", "sub_state": "running",
        "pid": 4242,                              # null when not running
        "uptime_seconds": 73.2,                   # since the current process started; null when not running
        "restarts": 0,                            # NRestarts (automatic restarts since the unit was loaded)
                                                  # + serving processes forked again after a crash or recycle
        "rss_bytes": 31457280, "cpu_percent": 0.4,  # process tree; 100 = one core; null when not running
        "requests": 1204, "in_flight": 0, "requests_per_second": 10.1,  # from STATUS=; null if not published
        "status_text": "serving: 1204 requests, 0 in flight, 10.1 req/s; ready since 2026-01-01 12:00:00",
        "last_exit": {"reason": "SIGKILL", "result": "signal", "time": 1767000000.1,  # or null
                      "code": "killed", "status": 9},   # the journal's EXIT_CODE= and EXIT_STATUS=
        "reason": null,                           # why it is not running, in one line, e.g. "cannot execute
                                                  # the interpreter (--python) (exit 203/EXEC): Failed to
                                                  # locate executable /srv/venv/bin/python3: Permission denied"
        "next_step": null                         # what to do about it, in words
      }],
      "workers_running": 1,
      "ok": true,               # every wanted worker runs, or none was started yet and the socket listens
      "next_step": null         # when not ok: what to do, in words
    }

``sockact status NAME`` exits 0 when ok, and 3 (as ``systemctl status`` does for a unit that is
not running) when fewer workers run than wanted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

from ..contract import CANNOT_START, instance_index, parse_status
from .app import App, resolve
from .facts import Sampler, Usage, backlogs, listen_address
from .reasons import PROCESS_EXITED, UNIT_DEACTIVATED, UNIT_FAILED, Exit, Why, exit_from_props, explain, reason_lines
from .systemctl import Props, Record, can_read_journal, journal_records, show_by_id
from .table import age, duration, mebibytes, table

SCHEMA = "sockact-status/1"
WORKER_PROPS = (
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "StatusText",
    "ExecMainStartTimestampMonotonic",
    "ExecMainCode",
    "ExecMainStatus",
    "Result",
    "NotifyAccess",
    "WorkingDirectory",
    "ExecStart",
)
CPU_WINDOW = 0.3  # seconds between the two psutil samples a CPU% needs
EXIT_HISTORY = 300  # newest exit records read from the journal; older ones cannot be a worker's last
REASON_HISTORY = 400  # newest journal records of the failing workers searched for the line that says why
NOT_OK = 3  # exit status when fewer workers run than wanted, as `systemctl status` for a unit not running
__all__ = ["PROCESS_EXITED", "UNIT_DEACTIVATED", "UNIT_FAILED", "Status", "Worker", "collect", "render"]


@dataclass(frozen=True)
class LastExit:
    reason: str
    result: str | None
    time: float
    code: str | None = None  # "exited", "killed" or "dumped"; None for a clean stop
    status: int | None = None  # exit status or signal number


@dataclass(frozen=True)
class Listener:
    address: str
    type: str
    backlog: int | None


@dataclass(frozen=True)
class Worker:
    instance: int
    unit: str
    wanted: bool
    state: str
    active_state: str
    sub_state: str
    pid: int | None
    uptime_seconds: float | None
    restarts: int
    rss_bytes: int | None
    cpu_percent: float | None
    requests: int | None
    in_flight: int | None
    requests_per_second: float | None
    status_text: str
    last_exit: LastExit | None
    not_serving: str | None = None
    threads_stuck: int | None = None
    reason: str | None = None
    next_step: str | None = None


@dataclass(frozen=True)
class Status:
    app: str
    time: float
    target: dict[str, Any]
    socket: dict[str, Any]
    workers: list[Worker]

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            **asdict(self),
            "workers_running": self.running,
            "ok": self.ok,
            "next_step": self.next_step,
        }

    @property
    def running(self) -> int:
        return sum(worker.state == "running" for worker in self.workers if worker.wanted)

    @property
    def idle(self) -> bool:
        """Nothing started the workers yet (or they were stopped cleanly) and the socket listens: the
        first connection starts them."""
        return (
            self.socket["state"] == "active"
            and self.target["state"] in ("inactive", "unknown")
            and all(worker.state == "stopped" and worker.reason is None for worker in self.workers)
        )

    @property
    def ok(self) -> bool:
        return self.idle or (self.running >= self.target["workers_wanted"] and self.socket["state"] == "active")

    @property
    def next_step(self) -> str | None:
        """What to do when not ok, in words: the first failed worker's fix, else how to start the app."""
        if self.ok:
            return None
        for worker in self.workers:
            if worker.next_step:
                return worker.next_step
        if any(worker.not_serving for worker in self.workers):
            return (
                f"a worker serves nothing: systemd's watchdog restarts it (--watchdog, --request-timeout); "
                f"`sockact logs {self.app}` shows the requests that block it"
            )
        if self.socket["state"] != "active":
            return f"start it: `sudo sockact start {self.app}`"
        if any(worker.state in ("starting", "restarting", "draining") for worker in self.workers):
            return f"workers are changing state: look again in a moment (`sockact status {self.app} --watch`)"
        return f"start the missing workers: `sudo sockact start {self.app}`"


def state_word(active: str, sub: str, status_text: str = "") -> str:
    """One word for a person, from systemd's ActiveState and SubState (and the worker's STATUS=)."""
    if active == "active":
        return "running" if sub in ("running", "") else sub
    if active == "activating" and status_text.startswith(CANNOT_START):
        return "retrying"  # the app cannot start; the worker waits before it tries again
    if active == "activating":
        return "restarting" if sub == "auto-restart" else "starting"
    return {"deactivating": "draining", "inactive": "stopped", "failed": "failed"}.get(active, active or "unknown")


# --- last exits from the journal -------------------------------------------------------------------


def _exit_reason(record: Record) -> str:
    code, status = record.get("EXIT_CODE", ""), str(record.get("EXIT_STATUS", ""))
    if code in ("exited", "killed", "dumped") and status.isdigit():
        return Exit(code, int(status)).named()  # exit 203/EXEC, SIGKILL, SIGABRT, core dumped
    return code or "exited"


def last_exits(records: list[Record]) -> dict[str, LastExit]:
    """Each unit's most recent exit, from systemd's exit records in chronological order."""
    found: dict[str, LastExit] = {}
    for record in records:
        unit, kind = str(record.get("UNIT", "")), record.get("MESSAGE_ID")
        when = int(record.get("__REALTIME_TIMESTAMP", 0)) / 1e6
        if kind == PROCESS_EXITED:
            status = str(record.get("EXIT_STATUS", ""))
            found[unit] = LastExit(
                _exit_reason(record),
                None,
                when,
                str(record.get("EXIT_CODE") or "") or None,
                int(status) if status.isdigit() else None,
            )
        elif kind == UNIT_DEACTIVATED:  # a clean stop: systemd logs no "Main process exited" for it
            found[unit] = LastExit("stopped", "success", when)
        elif kind == UNIT_FAILED and unit in found:
            found[unit] = replace(found[unit], result=str(record.get("UNIT_RESULT", "")))
    return found


def read_last_exits(units: list[str]) -> dict[str, LastExit]:
    if not units or not can_read_journal():  # status stays useful without the journal
        return {}
    matches = [f"MESSAGE_ID={ident}" for ident in (PROCESS_EXITED, UNIT_FAILED, UNIT_DEACTIVATED)]
    records = journal_records("--reverse", f"--lines={EXIT_HISTORY}", *(f"--unit={unit}" for unit in units), *matches)
    return last_exits(records[::-1])


def read_reason_lines(name: str, units: list[str]) -> dict[str, str]:
    """unit -> the journal's line that says why it last failed; {} without journal access."""
    if not units or not can_read_journal():
        return {}
    history = f"--lines={REASON_HISTORY}"
    records = journal_records("--reverse", history, *(f"--unit={unit}" for unit in units))
    # A process that fails during its setup (exit 200/CHDIR, 203/EXEC) logs why and exits at once;
    # journald may not see its control group in time, and then only UNIT= names the worker.
    setup = journal_records("--reverse", history, *(f"UNIT={unit}" for unit in units))
    merged = {str(record.get("__CURSOR")): record for record in [*records, *setup]}
    newest_first = sorted(merged.values(), key=lambda record: int(record.get("__REALTIME_TIMESTAMP", 0)), reverse=True)
    return reason_lines(name, newest_first, units)


# --- collecting ------------------------------------------------------------------------------------


def _worker_units(app: App) -> dict[int, Props]:
    """Wanted instances, plus any other loaded instance that is not simply stopped (e.g. left by a scale-down)."""
    shown = show_by_id([*app.instances, f"{app.name}@*.service"], WORKER_PROPS)
    wanted = set(app.wanted)
    workers: dict[int, Props] = {}
    for unit, props in shown.items():
        index = instance_index(app.name, unit)
        if index is not None and (index in wanted or props.get("ActiveState") not in ("inactive", None)):
            workers[index] = props
    return workers


def _usages(pids: list[int], sampler: Sampler) -> dict[int, Usage | None]:
    usages = {pid: sampler.usage(pid) for pid in pids}
    if any(usage is not None and usage.cpu_percent is None for usage in usages.values()):
        time.sleep(CPU_WINDOW)  # a measurement window, not a wait for a condition
        usages = {pid: sampler.usage(pid) for pid in pids}
    sampler.prune()
    return usages


def _uptime(props: Props) -> float | None:
    started = int(props.get("ExecMainStartTimestampMonotonic") or 0)
    if not started or props.get("ActiveState") != "active":
        return None
    # systemd and time.monotonic() both read CLOCK_MONOTONIC.
    return max(0.0, time.monotonic() - started / 1e6)


def _last_failure(props: Props, last: LastExit | None) -> Exit | None:
    """The main process's last exit: systemd keeps it until the next start; between two quick starts
    (a process that fails in its setup is restarted 0.1 s later) the journal's record says it."""
    shown = exit_from_props(props)
    if shown is not None and shown.failed:
        return shown
    if last is not None and last.code and last.status is not None and props.get("ActiveState") != "active":
        return Exit(last.code, last.status, last.result or "")
    return shown


def _why(app: App, props: Props, state: str, last: LastExit | None, line: str | None, journal: bool) -> Why | None:
    exec_app = props.get("NotifyAccess", "all") != "all"  # the built-in runtime's units say NotifyAccess=all
    return explain(
        app.name,
        state,
        props.get("StatusText", ""),
        _last_failure(props, last),
        line,
        journal=journal,
        exec_app=exec_app,
        paths=props,
    )


def _worker(
    app: App,
    index: int,
    props: Props,
    usage: Usage | None,
    last: LastExit | None,
    line: str | None = None,
    journal: bool = False,
) -> Worker:
    pid = int(props.get("MainPID") or 0) or None
    counters = parse_status(props.get("StatusText", ""))
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    state = state_word(active, sub)
    not_serving = counters.not_serving if state == "running" else None
    state = "not serving" if not_serving else state_word(active, sub, props.get("StatusText", ""))
    why = _why(app, props, state, last, line, journal)
    return Worker(
        instance=index,
        unit=app.instance(index),
        wanted=index in app.wanted,
        state=state,
        active_state=active,
        sub_state=sub,
        pid=pid,
        uptime_seconds=_uptime(props),
        # systemd's restarts of the unit, and the serving processes its main process forked again
        restarts=int(props.get("NRestarts") or 0) + counters.replaced,
        rss_bytes=usage.rss if usage else None,
        cpu_percent=usage.cpu_percent if usage else None,
        requests=counters.requests,
        in_flight=counters.in_flight,
        requests_per_second=counters.per_second,
        status_text=props.get("StatusText", ""),
        last_exit=last,
        not_serving=not_serving,
        threads_stuck=counters.threads_stuck,
        reason=why.text() if why else None,
        next_step=why.next_step if why else None,
    )


def _listeners(listen: str) -> list[Listener]:
    """systemd's Listen= lines ('[::]:8000 (Stream)') with each socket's accept queue."""
    lines = [line for line in listen.splitlines() if line]
    addresses = [listen_address(line) for line in lines]
    queues = backlogs(addresses)
    kinds = [line[len(address) :].strip(" ()") for line, address in zip(lines, addresses)]
    return [Listener(address, kind, queues[address]) for address, kind in zip(addresses, kinds)]


def _socket(app: App) -> dict[str, Any]:
    return {
        "unit": app.socket_unit,
        "state": app.socket.get("ActiveState", "unknown"),
        "sub_state": app.socket.get("SubState", ""),
        "enabled": app.socket.get("UnitFileState", ""),
        "listen": [asdict(listener) for listener in _listeners(app.socket.get("Listen", ""))],
    }


def _failing(props: Props) -> bool:
    """Not running, and its last start failed: worth searching the journal for why."""
    if props.get("ActiveState") == "active":
        return False
    shown = exit_from_props(props)
    return props.get("ActiveState") != "inactive" or (shown is not None and shown.failed)


def collect(name: str, sampler: Sampler) -> Status:
    app = resolve(name)
    units = _worker_units(app)
    pids = [int(props.get("MainPID") or 0) for props in units.values()]
    usages = _usages([pid for pid in pids if pid], sampler)
    exits = read_last_exits([app.instance(index) for index in units])
    journal = can_read_journal()
    failing = [app.instance(index) for index, props in units.items() if _failing(props)]
    lines = read_reason_lines(name, failing)
    workers = [
        _worker(
            app,
            index,
            props,
            usages.get(int(props.get("MainPID") or 0)),
            exits.get(app.instance(index)),
            lines.get(app.instance(index)),
            journal,
        )
        for index, props in sorted(units.items())
    ]
    target = {
        "unit": app.target_unit,
        "state": app.target.get("ActiveState", "unknown"),
        "workers_wanted": len(app.wanted),
    }
    return Status(name, time.time(), target, _socket(app), workers)


# --- rendering -------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _last_exit(last: LastExit | None, now: float) -> str:
    if last is None:
        return "-"
    shown_result = last.result not in (None, "success", "exit-code", "signal", "core-dump")
    return f"{last.reason}{f' ({last.result})' if shown_result else ''}, {age(now - last.time)} ago"


def _state(worker: Worker) -> str:
    if worker.not_serving:
        return f"not serving ({worker.not_serving})"
    if worker.threads_stuck:
        return f"{worker.state} ({worker.threads_stuck} thread{'s' if worker.threads_stuck > 1 else ''} stuck)"
    return worker.state


def _worker_row(worker: Worker, now: float) -> list[str]:
    return [
        f"@{worker.instance}" + ("" if worker.wanted else " (extra)"),
        _state(worker),
        _number(worker.pid),
        duration(worker.uptime_seconds),
        str(worker.restarts),
        mebibytes(worker.rss_bytes),
        _number(worker.cpu_percent, 1),
        _number(worker.requests),
        _number(worker.in_flight),
        _number(worker.requests_per_second, 1),
        _last_exit(worker.last_exit, now),
    ]


def render(status: Status) -> str:
    sock, target = status.socket, status.target
    stuck = sum(worker.not_serving is not None for worker in status.workers)
    head = (
        f"{status.app}: {status.running} of {target['workers_wanted']} workers running"
        f"{f', {stuck} not serving' if stuck else ''} ({target['unit']} {target['state']})"
    )
    listens = sock["listen"] or [{"address": "-", "backlog": None}]
    socket_rows = [
        [
            sock["unit"] if i == 0 else "",
            f"{sock['state']} ({sock['sub_state']})" if i == 0 else "",
            sock["enabled"] if i == 0 else "",
            item["address"],
            _number(item["backlog"]),
        ]
        for i, item in enumerate(listens)
    ]
    worker_rows = [_worker_row(worker, status.time) for worker in status.workers]
    return (
        "\n".join(
            [
                head,
                "",
                table(["SOCKET", "STATE", "ON BOOT", "LISTEN", "BACKLOG"], socket_rows),
                "",
                table(
                    [
                        "WORKER",
                        "STATE",
                        "PID",
                        "UPTIME",
                        "RESTARTS",
                        "RSS",
                        "CPU%",
                        "REQUESTS",
                        "IN FLIGHT",
                        "REQ/S",
                        "LAST EXIT",
                    ],
                    worker_rows,
                ),
                *_reasons(status),
            ]
        )
        + "\n"
    )


def _reasons(status: Status) -> list[str]:
    """A line in words for each worker that is not running, with the reason, then the next step."""
    lines = [
        f"@{worker.instance} {worker.state}: {worker.reason}{_wait(worker)}"
        for worker in status.workers
        if worker.reason
    ]
    if status.idle:
        lines.append("No worker was started yet: the first connection to the socket starts them.")
    elif not status.ok:
        lines.append(f"Next: {status.next_step}")
    return ["", *lines] if lines else []


def _wait(worker: Worker) -> str:
    """'; retrying in 4 s (attempt 3)' from STATUS= of a worker waiting to try again."""
    text = worker.status_text
    return text[text.rindex("; retrying in") :] if worker.state == "retrying" and "; retrying in" in text else ""


def show_status(name: str, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    status = collect(name, Sampler())
    out.write(json.dumps(status.as_json()) + "\n" if as_json else render(status))
    return 0 if status.ok else NOT_OK


def watch_status(name: str, interval: float, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Refresh until Ctrl-C: in place on a terminal (like ``pm2 monit``), one frame after another otherwise."""
    sampler = Sampler()
    redraw = out.isatty() and not as_json
    try:
        while True:
            status = collect(name, sampler)
            if as_json:
                out.write(json.dumps(status.as_json()) + "\n")
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(status.time))
                frame = f"every {interval:g}s, Ctrl-C to stop    {stamp}\n\n{render(status)}"
                out.write(("\x1b[H\x1b[2J" + frame) if redraw else frame + "\n")
            out.flush()
            time.sleep(interval)  # the refresh period the user asked for
    except KeyboardInterrupt:
        return 0


def failing_workers(name: str) -> list[Worker]:
    """The workers that are not running because something failed, each with its reason (no psutil, no wait)."""
    app = resolve(name)
    units = _worker_units(app)
    exits = read_last_exits([app.instance(index) for index in units])
    lines = read_reason_lines(name, [app.instance(index) for index, props in units.items() if _failing(props)])
    journal = can_read_journal()
    workers = [
        _worker(app, index, props, None, exits.get(app.instance(index)), lines.get(app.instance(index)), journal)
        for index, props in sorted(units.items())
    ]
    return [worker for worker in workers if worker.reason]
