"""`sockact reload`: a rolling restart for new code, one instance at a time, each ready before the next.

systemd restarts an instance by stopping it (the worker drains its in-flight requests) and starting
it again; with Type=notify the start job ends only at READY=1, sent after the app's startup. The
other instances keep accepting from the shared socket meanwhile, so N-1 workers serve throughout.
Instances are named one by one: ``systemctl restart 'NAME@*'`` skips inactive ones (systemd #26419).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from ..errors import SystemdError
from .app import App, require_root, resolve
from .logs import format_record
from .systemctl import daemon_reload, journal_cursor, journal_records, show_by_id, systemctl, try_systemctl

RESTART_PROPS = ("ActiveState", "SubState", "MainPID", "Result")
JOURNAL_LINES = 15  # the end of a failed instance's log, shown with the error


@dataclass(frozen=True)
class Restarted:
    unit: str
    old_pid: int
    new_pid: int
    seconds: float


def _state(unit: str) -> dict[str, str]:
    return show_by_id([unit], RESTART_PROPS).get(unit, {})


def journal_since(app: App, unit: str, cursor: str | None, last: int = JOURNAL_LINES) -> list[str]:
    """The end of a unit's journal (since cursor, if given), formatted as `sockact logs` prints it."""
    after = [f"--after-cursor={cursor}"] if cursor else ["--lines=200"]
    records = journal_records(*after, f"--unit={unit}")
    return [format_record(app.name, record, colour=False) for record in records[-last:]]


def restart_instance(app: App, unit: str, err: TextIO) -> Restarted:
    """Restart one instance and wait for READY=1; on failure print its journal and raise SystemdError."""
    before = _state(unit)
    if before.get("ActiveState") == "failed":
        try_systemctl("reset-failed", unit)  # a unit that hit its start limit would refuse the restart
    cursor = journal_cursor()
    began = time.monotonic()
    try:
        systemctl("restart", unit)
        problem = ""
    except SystemdError as exc:
        problem = str(exc)
    after = _state(unit)
    if not problem and after.get("ActiveState") == "active":
        return Restarted(
            unit, int(before.get("MainPID") or 0), int(after.get("MainPID") or 0), time.monotonic() - began
        )
    state = f"now {after.get('ActiveState', '?')}/{after.get('SubState', '?')}, result {after.get('Result', '?')}"
    why = f"{problem}; {state}" if problem else state
    err.write(f"{unit} did not become ready ({why}); its journal since the restart:\n")
    err.writelines(f"  {line}\n" for line in journal_since(app, unit, cursor))
    raise SystemdError(f"{unit} did not become ready ({state})")


def _stop_message(app: App, done: list[Restarted], failed: str) -> str:
    remaining = [unit for unit in app.instances if unit != failed and unit not in {r.unit for r in done}]
    parts = [f"reload of {app.name} stopped at {failed}, which did not become ready"]
    if done:
        parts.append(f"{', '.join(r.unit for r in done)} run the new code")
    if remaining:
        parts.append(f"{', '.join(remaining)} still run the old code")
    parts.append(f"fix the app and run `sudo sockact reload {app.name}` again")
    return "; ".join(parts)


def _refresh_units(app: App, out: TextIO) -> App:
    """Pick up unit files changed on disk (e.g. by `sockact install`) before restarting anything."""
    if any(props.get("NeedDaemonReload") == "yes" for props in (app.socket, app.target, app.template)):
        daemon_reload()
        out.write("unit files changed on disk: ran systemctl daemon-reload\n")
        return resolve(app.name)
    return app


def reload(name: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    require_root("reload")
    app = _refresh_units(resolve(name), out)
    units = app.instances
    states = show_by_id(units, ["ActiveState"])
    if not app.running and all(states.get(unit, {}).get("ActiveState") != "active" for unit in units):
        out.write(
            f"{name}: no worker is running, so there is nothing to reload; "
            f"the next connection to {app.socket_unit} starts them with the new code\n"
        )
        return 0
    if len(units) == 1:
        err.write(
            f"{name} has one worker: this reload cannot be gapless; while it restarts, new connections "
            f"wait in the socket backlog (scale to 2 or more workers for a gapless reload)\n"
        )
    out.write(f"{name}: restarting {len(units)} workers one at a time\n")
    began, done = time.monotonic(), list[Restarted]()
    for unit in units:
        try:
            restarted = restart_instance(app, unit, err)
        except SystemdError:
            raise SystemdError(_stop_message(app, done, unit)) from None
        done.append(restarted)
        out.write(
            f"{unit}: ready again after {restarted.seconds:.1f} s (pid {restarted.old_pid or '-'} -> "
            f"{restarted.new_pid})\n"
        )
        out.flush()
    out.write(f"{name}: reloaded {len(done)} workers in {time.monotonic() - began:.1f} s\n")
    return 0
