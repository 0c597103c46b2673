"""Requests that hold a worker's whole serving capacity: the WSGI threads' app calls, the ASGI loop's beat.

A WSGI worker whose every thread has run one app call for longer than --request-timeout serves
nothing, yet its main thread would go on sending WATCHDOG=1: `Calls` tells the tick so, and the tick
stops the pings (systemd then restarts the worker after WatchdogSec=). An ASGI worker's pings come
from its event loop, so a request that blocks the loop stops them by itself: `LoopWatch`, a thread of
its own, only says which request blocks it, in the journal and in STATUS=, before systemd's kill.
A request that awaits (long polling, SSE, a WebSocket) blocks nothing and is never counted here.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..contract import format_threads_stuck

logger = logging.getLogger("sockact.runtime")

DEFAULT_REQUEST_TIMEOUT = 30.0  # gunicorn's --timeout; nginx gives up on an upstream at 60 s
# A WSGI worker whose every thread has been in one call this long, with requests waiting for a thread,
# stops accepting (its siblings take new connections, and none of them defers to it) until a thread is
# free: short enough that few connections queue behind threads that hang, long enough that a worker
# answering quick requests under full load never stops.
SATURATED_AFTER = 0.02
PATH_SHOWN = 200  # characters of a request path written to the journal


def shown(path: str) -> str:
    """A client's path for the log: control characters escaped (one journal line), length bounded."""
    text = repr(path)[1:-1] if not path.isprintable() else path
    return text if len(text) <= PATH_SHOWN else text[:PATH_SHOWN] + "..."


def _place(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def where(frame: FrameType | None) -> str:
    """Where a thread or the loop is stuck: the innermost Python frame and, when that is in the
    standard library (threading.Event.wait, socket), the innermost frame outside it that called it."""
    if frame is None:
        return "an unknown place"
    import sysconfig  # only when something is stuck

    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    caller: FrameType | None = frame
    while caller is not None and caller.f_code.co_filename.startswith(stdlib):
        caller = caller.f_back
    if caller is None or caller is frame:
        return _place(frame)
    return f"{_place(caller)} (in {_place(frame)})"


class Call:
    """One app call running in a WSGI thread."""

    __slots__ = ("logged", "method", "path", "since", "thread")

    def __init__(self, method: str, path: str, thread: int) -> None:
        self.since = time.monotonic()
        self.method = method
        self.path = path
        self.thread = thread
        self.logged = False


class Verdict:
    """What the tick learns: how many threads are stuck, and for how long the youngest of them."""

    __slots__ = ("for_seconds", "stuck", "threads")

    def __init__(self, stuck: int, threads: int, for_seconds: float) -> None:
        self.stuck, self.threads, self.for_seconds = stuck, threads, for_seconds

    @property
    def all_stuck(self) -> bool:
        """The worker serves nothing: no WATCHDOG=1 while this holds."""
        return self.stuck >= self.threads

    @property
    def text(self) -> str:
        # `sockact status` parses this (sockact.contract.parse_status).
        return format_threads_stuck(self.stuck, self.threads, self.for_seconds) if self.stuck else ""


class Calls:
    """The app calls running now, one per thread; `timeout` 0 turns the stuck check off."""

    def __init__(self, threads: int, timeout: float) -> None:
        self.threads = threads
        self.timeout = timeout
        self.running: dict[int, Call] = {}  # by thread id; each thread writes only its own key

    def begin(self, method: str, path: str) -> None:
        thread = threading.get_ident()
        self.running[thread] = Call(method, path, thread)

    def end(self) -> None:
        self.running.pop(threading.get_ident(), None)

    def saturated(self, now: float) -> bool:
        """Every thread has been in one call for SATURATED_AFTER."""
        calls = list(self.running.values())
        return len(calls) >= self.threads and all(now - call.since >= SATURATED_AFTER for call in calls)

    def check(self, now: float) -> Verdict:
        """Called on the tick: logs each call the first time it runs past the timeout."""
        if not self.timeout:
            return Verdict(0, self.threads, 0.0)
        stuck = [call for call in list(self.running.values()) if now - call.since > self.timeout]
        verdict = Verdict(len(stuck), self.threads, min((now - call.since for call in stuck), default=0.0))
        fresh = [call for call in stuck if not call.logged]
        if fresh:
            frames = sys._current_frames()
            for call in fresh:
                call.logged = True
                logger.error(
                    "request %s %s has run for %.1f s, over the request timeout of %g s; its thread is at %s",
                    call.method,
                    shown(call.path),
                    now - call.since,
                    self.timeout,
                    where(frames.get(call.thread)),
                )
            if verdict.all_stuck:
                logger.error(
                    "all %d threads are stuck: WATCHDOG=1 stops, so systemd restarts this worker", self.threads
                )
        return verdict


def loop_limit(request_timeout: float, watchdog: float | None) -> float | None:
    """Seconds without a beat after which the serving loop counts as blocked: the request timeout, or half
    of WatchdogSec= when that comes first (before systemd's kill); None when both are off. LoopWatch
    logs the blocking request past it, and /live (sockact.runtime.health) answers 503 past it."""
    limits = [limit for limit in (request_timeout, (watchdog or 0) / 2) if limit > 0]
    return min(limits) if limits else None


def request_of(frame: FrameType | None) -> str | None:
    """'GET /path' of the innermost ASGI call on this stack: the first frame with an HTTP scope."""
    while frame is not None:
        scope: Any = frame.f_locals.get("scope")
        if isinstance(scope, dict) and scope.get("type") in ("http", "websocket"):
            return f"{scope.get('method', 'WEBSOCKET')} {shown(str(scope.get('path', '')))}"
        frame = frame.f_back
    return None


class LoopWatch:
    """A thread that notices the event loop's beat stopped for `report_after` seconds and logs,
    once per block, which request blocks it and where; `on_blocked(seconds)` runs about every second
    while it stays blocked (the engine publishes STATUS= from there)."""

    def __init__(self, report_after: float, on_blocked: Callable[[float], None]) -> None:
        self.report_after = report_after
        self.on_blocked = on_blocked
        self.loop_thread = threading.get_ident()  # created from the loop's thread
        self.last_beat = time.monotonic()
        self.reported = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sockact-loop-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        """From the loop's tick."""
        self.last_beat = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = min(1.0, self.report_after / 4)
        while not self._stop.wait(interval):
            blocked = time.monotonic() - self.last_beat
            if blocked < self.report_after:
                self.reported = False
                continue
            if not self.reported:
                self.reported = True
                self._report(blocked)
            self.on_blocked(blocked)

    def _report(self, blocked: float) -> None:
        frame = sys._current_frames().get(self.loop_thread)
        request = request_of(frame)
        logger.error(
            "the event loop has been blocked for %.1f s by %s, at %s: no request is served meanwhile "
            "and systemd restarts this worker once WatchdogSec= passes",
            blocked,
            request or "code outside any request",
            where(frame),
        )
