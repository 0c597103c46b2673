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
        "state": "running",                       # running|not serving|starting|retrying|restarting|draining|stopped|failed
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
        "last_exit": {"reason": "SIGKILL", "result": "signal", "time": 1767000000.1}  # or null
      }]
    }
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from ..runtime.boot import STATUS_PREFIX as CANNOT_START
from .app import App, instance_index, resolve
from .facts import Sampler, Usage, backlogs, listen_address, parse_status_text
from .systemctl import Props, Record, can_read_journal, journal_records, show_by_id
from .table import age, duration, mebibytes, table

SCHEMA = "sockact-status/1"
WORKER_PROPS = ("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "ExecMainStartTimestampMonotonic")
CPU_WINDOW = 0.3  # seconds between the two psutil samples a CPU% needs
# systemd's catalog ids for "Main process exited", "Failed with result" and "Deactivated successfully".
PROCESS_EXITED = "98e322203f7a4ed290d09fe03c09fe15"
UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
UNIT_DEACTIVATED = "7ad2d189f7e94e70a38c781354912448"
EXIT_HISTORY = 300  # newest exit records read from the journal; older ones cannot be a worker's last


@dataclass(frozen=True)
class LastExit:
    reason: str
    result: str | None
    time: float


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


@dataclass(frozen=True)
class Status:
    app: str
    time: float
    target: dict[str, Any]
    socket: dict[str, Any]
    workers: list[Worker]

    def as_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @property
    def running(self) -> int:
        return sum(worker.state == "running" for worker in self.workers)


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
    if code == "exited":
        return f"exit {status}"
    if code in ("killed", "dumped") and status.isdigit():
        try:
            name = signal.Signals(int(status)).name
        except ValueError:
            name = f"signal {status}"
        return name + (", core dumped" if code == "dumped" else "")
    return code or "exited"


def last_exits(records: list[Record]) -> dict[str, LastExit]:
    """Each unit's most recent exit, from systemd's exit records in chronological order."""
    found: dict[str, LastExit] = {}
    for record in records:
        unit, kind = str(record.get("UNIT", "")), record.get("MESSAGE_ID")
        when = int(record.get("__REALTIME_TIMESTAMP", 0)) / 1e6
        if kind == PROCESS_EXITED:
            found[unit] = LastExit(_exit_reason(record), None, when)
        elif kind == UNIT_DEACTIVATED:  # a clean stop: systemd logs no "Main process exited" for it
            found[unit] = LastExit("stopped", "success", when)
        elif kind == UNIT_FAILED and unit in found:
            found[unit] = LastExit(found[unit].reason, str(record.get("UNIT_RESULT", "")), found[unit].time)
    return found


def read_last_exits(units: list[str]) -> dict[str, LastExit]:
    if not units or not can_read_journal():  # status stays useful without the journal
        return {}
    matches = [f"MESSAGE_ID={ident}" for ident in (PROCESS_EXITED, UNIT_FAILED, UNIT_DEACTIVATED)]
    records = journal_records("--reverse", f"--lines={EXIT_HISTORY}", *(f"--unit={unit}" for unit in units), *matches)
    return last_exits(records[::-1])


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


def _worker(app: App, index: int, props: Props, usage: Usage | None, last: LastExit | None) -> Worker:
    pid = int(props.get("MainPID") or 0) or None
    counters = parse_status_text(props.get("StatusText", ""))
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    state = state_word(active, sub)
    not_serving = counters.not_serving if state == "running" else None
    return Worker(
        instance=index, unit=app.instance(index), wanted=index in app.wanted,
        state="not serving" if not_serving else state_word(active, sub, props.get("StatusText", "")),
        active_state=active, sub_state=sub, pid=pid, uptime_seconds=_uptime(props),
        # systemd's restarts of the unit, and the serving processes its main process forked again
        restarts=int(props.get("NRestarts") or 0) + counters.replaced,
        rss_bytes=usage.rss if usage else None, cpu_percent=usage.cpu_percent if usage else None,
        requests=counters.requests, in_flight=counters.in_flight, requests_per_second=counters.per_second,
        status_text=props.get("StatusText", ""), last_exit=last, not_serving=not_serving,
        threads_stuck=counters.threads_stuck,
    )


def _listeners(listen: str) -> list[Listener]:
    """systemd's Listen= lines ('[::]:8000 (Stream)') with each socket's accept queue."""
    lines = [line for line in listen.splitlines() if line]
    addresses = [listen_address(line) for line in lines]
    queues = backlogs(addresses)
    kinds = [line[len(address):].strip(" ()") for line, address in zip(lines, addresses)]
    return [Listener(address, kind, queues[address]) for address, kind in zip(addresses, kinds)]


def _socket(app: App) -> dict[str, Any]:
    return {
        "unit": app.socket_unit,
        "state": app.socket.get("ActiveState", "unknown"),
        "sub_state": app.socket.get("SubState", ""),
        "enabled": app.socket.get("UnitFileState", ""),
        "listen": [asdict(listener) for listener in _listeners(app.socket.get("Listen", ""))],
    }


def collect(name: str, sampler: Sampler) -> Status:
    app = resolve(name)
    units = _worker_units(app)
    pids = [int(props.get("MainPID") or 0) for props in units.values()]
    usages = _usages([pid for pid in pids if pid], sampler)
    exits = read_last_exits([app.instance(index) for index in units])
    workers = [
        _worker(app, index, props, usages.get(int(props.get("MainPID") or 0)), exits.get(app.instance(index)))
        for index, props in sorted(units.items())
    ]
    target = {"unit": app.target_unit, "state": app.target.get("ActiveState", "unknown"),
              "workers_wanted": len(app.wanted)}
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
        f"@{worker.instance}" + ("" if worker.wanted else " (extra)"), _state(worker), _number(worker.pid),
        duration(worker.uptime_seconds), str(worker.restarts), mebibytes(worker.rss_bytes),
        _number(worker.cpu_percent, 1), _number(worker.requests), _number(worker.in_flight),
        _number(worker.requests_per_second, 1), _last_exit(worker.last_exit, now),
    ]


def render(status: Status) -> str:
    sock, target = status.socket, status.target
    stuck = sum(worker.not_serving is not None for worker in status.workers)
    head = (f"{status.app}: {status.running} of {target['workers_wanted']} workers running"
            f"{f', {stuck} not serving' if stuck else ''} ({target['unit']} {target['state']})")
    listens = sock["listen"] or [{"address": "-", "backlog": None}]
    socket_rows = [
        [sock["unit"] if i == 0 else "", f"{sock['state']} ({sock['sub_state']})" if i == 0 else "",
         sock["enabled"] if i == 0 else "", item["address"], _number(item["backlog"])]
        for i, item in enumerate(listens)
    ]
    worker_rows = [_worker_row(worker, status.time) for worker in status.workers]
    return "\n".join([
        head, "",
        table(["SOCKET", "STATE", "ON BOOT", "LISTEN", "BACKLOG"], socket_rows), "",
        table(["WORKER", "STATE", "PID", "UPTIME", "RESTARTS", "RSS", "CPU%", "REQUESTS", "IN FLIGHT", "REQ/S",
               "LAST EXIT"], worker_rows),
        *_why(status),
    ]) + "\n"


def _why(status: Status) -> list[str]:
    """A line in words for each worker that is retrying: the app's own reason and the next attempt."""
    lines = [f"@{worker.instance} {worker.state}: {worker.status_text}" for worker in status.workers
             if worker.state == "retrying"]
    if lines:
        lines.append(f"The workers try again by themselves once the app is fixed (`sockact logs {status.app}`).")
    return ["", *lines] if lines else []


def show_status(name: str, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    status = collect(name, Sampler())
    out.write(json.dumps(status.as_json()) + "\n" if as_json else render(status))
    return 0


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
