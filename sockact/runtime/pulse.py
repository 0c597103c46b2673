"""What both serving engines do from their loop: READY=1, WATCHDOG=1, STATUS= and the scoreboard's beat."""

from __future__ import annotations

import os
import time

from ..contract import ENV_REPLACED, format_draining, format_serving
from . import boot
from .balance import Scoreboard
from .notify import Notifier, watchdog_interval
from .recycle import Recycler
from .share import CpuShare, mode_from_env

# An idle keep-alive connection gets this long, once draining began, for a request already on the
# wire: it is served (with Connection: close) instead of reset.
IDLE_GRACE = 0.5
STATUS_EVERY = 1.0  # STATUS= figures, and looking for siblings that came or went (scale, reload)


def drain_budget(stop_timeout: float) -> float:
    """Seconds for in-flight work after SIGTERM: the stop timeout less up to 1 s for the app's shutdown,
    so the worker leaves before systemd's SIGKILL."""
    return max(0.1, stop_timeout - min(1.0, stop_timeout * 0.2))


class Pulse:
    def __init__(self, notifier: Notifier, board: Scoreboard | None, recycler: Recycler | None = None) -> None:
        self.notifier = notifier
        self.board = board
        self.recycler = recycler
        self.watchdog = watchdog_interval()
        self.ready_since = ""
        self.leaving = ""  # set on SIGTERM with --drain-delay: what STATUS= says before the figures
        # How often the unit's main process forked a serving process again (sockact.runtime.respawn).
        self.replaced = int(os.environ.get(ENV_REPLACED, "0") or 0)
        self.ready_due = False  # READY=1 not delivered yet (EMFILE, a busy manager): sent again on the tick
        self._last_ping = self._last_status = 0.0
        self._last_served = 0
        self.share = CpuShare(mode_from_env())

    def status_line(self, served: int, in_flight: int, rate: float, stuck: str = "") -> str:
        # `sockact status` reads it back (sockact.contract.parse_status).
        return format_serving(
            served,
            in_flight,
            rate,
            ready_since=self.ready_since,
            stuck=stuck,
            leaving=self.leaving,
            replaced=self.replaced,
        )

    def ready(self) -> None:
        self.ready_since = time.strftime("%Y-%m-%d %H:%M:%S")
        self.ready_due = not self.notifier.ready(self.status_line(0, 0, 0.0)) and self.notifier.enabled
        boot.started()
        if self.recycler is not None:
            self.recycler.started()

    def tick(self, served: int, in_flight: int, connections: int, *, healthy: bool = True, stuck: str = "") -> bool:
        """Called by the serving loop about every 0.1 s; if the loop hangs, the watchdog pings stop.
        `healthy` False (every thread stuck in the app) stops them too, though the loop still runs.
        True once when the worker should recycle: the engine then drains as on SIGTERM."""
        now = time.monotonic()
        if self.ready_due:
            self.ready_due = not self.notifier.ready()
        if (
            healthy
            and self.watchdog is not None
            and now - self._last_ping >= self.watchdog / 4
            and self.notifier.watchdog()
        ):
            self._last_ping = now  # not delivered: tried again on the next tick, not a quarter period later
        if self.board is not None:
            self.board.heartbeat(connections)  # the exact count, so no drift can last
        if self.share.pending:
            self.share.apply()
        if now - self._last_status >= STATUS_EVERY:
            rate = (served - self._last_served) / (now - self._last_status) if self._last_status else 0.0
            self._last_status, self._last_served = now, served
            self.notifier.status(self.status_line(served, in_flight, rate, stuck))
            if self.board is not None:
                self.board.refresh()
                self.share.update(1 + self.board.live())
        return self.recycler is not None and self.recycler.due(served)

    def stopping(self, in_flight: int) -> None:
        """Leave the scoreboard (siblings stop deferring to us), then STOPPING=1 — unless this serving
        process recycles under a respawning parent: the unit is not stopping (systemd would take
        STOPPING=1 for good and ignore the next process's READY=1)."""
        if self.board is not None:
            self.board.close()
            self.board = None
        why = self.recycler.reason if self.recycler is not None else None
        if not (why and boot.forked()):
            self.notifier.stopping()
        self.notifier.status(format_draining(in_flight, why or ""))
