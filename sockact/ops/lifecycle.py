"""`sockact start` and `sockact stop`: the whole app at once, including the way out of a crash loop."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..contract import CANNOT_START
from ..errors import SystemdError
from .app import App, require_root, resolve
from .reload import journal_since
from .systemctl import show_by_id, systemctl, try_systemctl

READY_TIMEOUT = 90.0  # systemd's own default TimeoutStartSec=


def _states(app: App) -> dict[str, str]:
    """Each wanted instance's ActiveState, or "retrying" while the app cannot start."""
    shown = show_by_id(app.instances, ["ActiveState", "StatusText"])
    return {
        unit: "retrying"
        if props.get("ActiveState") == "activating" and props.get("StatusText", "").startswith(CANNOT_START)
        else props.get("ActiveState", "?")
        for unit, props in shown.items()
    }


def _wait_started(app: App, timeout: float = READY_TIMEOUT) -> dict[str, str]:
    """Until every wanted instance is active (READY=1), failed, or retrying (the app cannot start: the
    worker waits before its next attempt); their final states."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)  # a worker restarted just now still shows the STATUS= of its previous attempt
    while True:
        states = _states(app)
        if all(state in ("active", "failed", "retrying") for state in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def start(name: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Clear failed states (a crash loop leaves the socket and workers failed), start the socket and
    every worker, and wait until each worker is ready."""
    require_root("start")
    app = resolve(name)
    cleared = [
        unit
        for unit, props in show_by_id([app.socket_unit, *app.instances], ["ActiveState"]).items()
        if props.get("ActiveState") == "failed"
    ]
    if cleared:
        try_systemctl("reset-failed", *cleared)
        out.write(f"{name}: cleared the failed state of {', '.join(cleared)}\n")
    began = time.monotonic()
    # Workers waiting to try a broken app again try now (the app may have been fixed meanwhile).
    retrying = [unit for unit, state in _states(app).items() if state == "retrying"]
    if retrying:
        systemctl("restart", "--no-block", *retrying)
    # Starting the target pulls every wanted worker even when the target is still active from before.
    systemctl("start", app.socket_unit)
    try_systemctl("start", f"{name}-health.socket")  # --health-listen's; most apps have none
    systemctl("start", "--no-block", app.target_unit, *app.instances)
    states = _wait_started(app)
    failed = sorted(unit for unit, state in states.items() if state != "active")
    for unit in failed:
        err.write(f"{unit} did not become ready ({states[unit]}); its journal:\n")
        err.writelines(f"  {line}\n" for line in journal_since(app, unit, None, last=10))
    if failed:
        raise SystemdError(
            f"{name}: {len(failed)} of {len(states)} workers did not start; fix the app "
            f"(see above or `sockact logs {name}`) and run `sudo sockact start {name}` again"
        )
    out.write(f"{name}: socket listening, {len(states)} workers ready in {time.monotonic() - began:.1f} s\n")
    return 0


def stop(name: str, out: TextIO = sys.stdout) -> int:
    """Stop every worker (each drains) and the socket: the port closes."""
    require_root("stop")
    app = resolve(name)
    began = time.monotonic()
    # One transaction with the health socket, if any: a probe there would start the workers again. The
    # workers hold both listening sockets until they exit, so a drain delay still answers meanwhile.
    health = f"{name}-health.socket"
    loaded = show_by_id([health], ["LoadState"]).get(health, {}).get("LoadState") == "loaded"
    systemctl("stop", app.target_unit, app.socket_unit, *([health] if loaded else []))
    out.write(
        f"{name}: workers drained and stopped, socket closed in {time.monotonic() - began:.1f} s "
        f"(`sudo sockact start {name}` starts them again)\n"
    )
    return 0
