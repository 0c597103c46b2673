"""Whether a just-started app comes up: every worker at READY=1, or the first worker's reason why not."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..contract import CANNOT_START, app_reason
from .systemctl import Props, journal_records, message, show_by_id

READY_TIMEOUT = 90.0  # systemd's own default TimeoutStartSec=
POLL = 0.1
START_PROPS = (
    "ActiveState",
    "SubState",
    "StatusText",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "Result",
    "InvocationID",
)
# Exit statuses systemd itself gives a process it could not start (systemd.exec(5), "Process Exit Codes").
SYSTEMD_EXITS = {
    "200": "cannot enter --chdir (systemd exit 200, CHDIR)",
    "203": "cannot execute the program (systemd exit 203, EXEC)",
    "217": "cannot become the workers' user (systemd exit 217, USER)",
    "226": "cannot set up the sandbox's namespaces (systemd exit 226, NAMESPACE)",
}
ERR_PRIORITY = 3


@dataclass
class Started:
    """The outcome: seconds taken, and the first failing worker with its reason (empty if all are ready)."""

    seconds: float
    unit: str = ""
    reason: str = ""
    states: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.unit


@dataclass(frozen=True)
class Before:
    """What the units showed before the start: later restarts, and STATUS= lines of an earlier
    invocation, are told apart from the start being watched."""

    restarts: dict[str, int]
    retrying: dict[str, str]  # unit -> InvocationID, for units waiting to retry a failed start

    @classmethod
    def read(cls, units: tuple[str, ...]) -> Before:
        shown = show_by_id(units, START_PROPS)
        return cls(
            {unit: int(props.get("NRestarts") or 0) for unit, props in shown.items()},
            {
                unit: props.get("InvocationID", "")
                for unit, props in shown.items()
                if props.get("StatusText", "").startswith(CANNOT_START)
            },
        )


def last_error(unit: str) -> str:
    """The newest error-priority journal line of unit (systemd's "Failed to locate executable ..."), if any."""
    records = journal_records("--lines=30", f"--unit={unit}")
    errors = [
        message(record).strip().removeprefix(f"{unit}: ")
        for record in records  # the unit is named already
        if int(record.get("PRIORITY", 6)) <= ERR_PRIORITY
    ]
    # A failed exec logs "Failed to execute X: E", then "Failed at step EXEC spawning X: E", while the next
    # attempt may already be logging; the step line closes an attempt, so it is the one to show.
    steps = [line for line in errors if line.startswith("Failed at step ")]
    others = [line for line in errors if not line.startswith("Failed to start ")]  # the job's failure: nothing more
    return (steps or others or [""])[-1]


def why_not(unit: str, props: Props, before: Before) -> str | None:
    """Why a worker is not coming up, or None while it still may (or is ready)."""
    active = props.get("ActiveState", "")
    if active == "active":
        return None
    status = props.get("StatusText", "")
    if status.startswith(CANNOT_START) and props.get("InvocationID", "") != before.retrying.get(unit):
        return app_reason(status)
    if active != "failed" and int(props.get("NRestarts") or 0) <= before.restarts.get(unit, 0):
        return None
    return exit_reason(unit)


def exit_reason(unit: str) -> str | None:
    """How the worker's last process ended, from systemd's exit record in the journal (None until it is
    there): systemd's own start failures with systemd's error line, anything else as the exit status."""
    from .status import read_last_exits

    last = read_last_exits([unit]).get(unit)
    if last is None:
        return None
    # "exit 203" or "exit 203/EXEC", as the exit record names it or not.
    code = last.reason.removeprefix("exit ").split("/", 1)[0]
    if code in SYSTEMD_EXITS:
        # journald may file systemd's "Failed at step …" line a moment after the exit record: wait a little.
        detail = last_error(unit)
        for _ in range(20):
            if detail.startswith("Failed at step "):
                break
            time.sleep(0.1)
            detail = last_error(unit)
        return f"{SYSTEMD_EXITS[code]}: {detail}" if detail else SYSTEMD_EXITS[code]
    return f"exited with status {code}" if code.isdigit() else f"ended by {last.reason}"


def wait_started(units: tuple[str, ...], before: Before, timeout: float = READY_TIMEOUT) -> Started:
    """Poll until every unit is active (READY=1), one of them cannot start, or the deadline passes."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        shown = show_by_id(units, START_PROPS)
        states = {unit: shown.get(unit, {}).get("ActiveState", "?") for unit in units}
        for unit in units:
            reason = why_not(unit, shown.get(unit, {}), before)
            if reason:
                return Started(time.monotonic() - began, unit, reason, states)
        if all(state == "active" for state in states.values()):
            return Started(time.monotonic() - began, states=states)
        if time.monotonic() > deadline:
            waiting = next(unit for unit, state in states.items() if state != "active")
            return Started(
                time.monotonic() - began,
                waiting,
                f"did not report ready (READY=1) within {timeout:g} s, still {states[waiting]}",
                states,
            )
        time.sleep(POLL)
