"""The serving process: sockact's HTTP engine (connection.py) in uvicorn's Server on adopted sockets, with
our accept loop, notify, watchdog and drain, for ASGI apps (tasks) and WSGI apps (wsgi_threads.py).

What happens on SIGTERM (`systemctl stop`, `sockact reload`, `sockact scale` down), in order:

1. systemd signals the unit's main process, the respawn parent (respawn.py), which passes SIGTERM on to
   the serving process (KillMode=mixed: the rest of the unit's processes only get SIGKILL at the end).
2. WorkerServer.handle_exit marks the worker leaving in the scoreboard (balance.py: siblings stop
   deferring to it) and in the health state (/ready counts it out). With --drain-delay and no other
   worker of the app serving, it goes on accepting for the delay (STATUS= "leaving: ..."), so that a
   load balancer told by /ready stops sending first; otherwise, or once the delay is over, the next
   tick (on_tick, every 0.1 s) sets should_exit.
3. shutdown() stops accepting: Admission.close() only stops reading the listening sockets; they stay
   open, held by systemd, so a sibling or the next worker takes what queues there. STATUS= turns
   "draining: N in flight".
4. Every connection is told (HttpConnection.shutdown): an idle one is closed after a short grace, a
   busy one after its response (no keep-alive). In-flight ASGI tasks and WSGI calls finish within the
   drain budget: pulse.drain_budget(--stop-timeout minus --drain-delay), which keeps up to 1 s for the
   app's lifespan shutdown; past it the remaining connections are closed (_drain_expired).
5. The WSGI thread pool stops, lifespan shutdown runs, the serving process exits 0, and the respawn
   parent exits with its status. systemd's TimeoutStopSec= (the same --stop-timeout) is the last word:
   SIGKILL for anything still running then.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
from typing import Any, Callable

import uvicorn
from uvicorn.lifespan.off import LifespanOff
from uvicorn.lifespan.on import LifespanOn

from ..contract import format_loop_blocked
from ..errors import RuntimeFailure
from . import http11, limits
from .balance import PAUSED_LOOK, AcceptGate, Scoreboard, for_this_worker, others_serving
from .connection import Site
from .health import State
from .notify import Notifier
from .pulse import Pulse, drain_budget
from .recycle import Recycler
from .stuck import DEFAULT_REQUEST_TIMEOUT, LoopWatch, loop_limit
from .wsgi_threads import Pool

logger = logging.getLogger("sockact.runtime")


class Admission:
    """Accepting on the shared listening sockets with the event loop's own accept loop (C, with
    uvloop), switched off while this worker holds pause_threshold() connections more than a live sibling.

    Every worker's loop waits on the same socket and whichever wakes first takes the whole queue, so
    one worker can end up with far more than its share. Instead of deciding in Python on every
    accept (measured: a third more CPU per connection with `Connection: close`), each worker counts
    its connections on the scoreboard (balance.py) and closes its server, a dup of the inherited
    socket, while it is ahead; its siblings keep accepting, so at least the least busy one always does.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        board: Scoreboard | None,
        connections: Callable[[], int] = lambda: 0,
        ceiling: int | None = None,
    ) -> None:
        self.sockets = sockets
        self.factory = factory
        self.board = board
        # Stop accepting at `ceiling` open connections, well before the descriptor limit (limits.py).
        self.connections = connections
        self.ceiling = limits.connection_ceiling() if ceiling is None else ceiling
        self.full = False
        self.full_check_due = False
        self.loop = asyncio.get_running_loop()
        self.servers: list[asyncio.Server] = []  # empty while paused
        self.opening: asyncio.Task[None] | None = None
        self.check_due = False
        self.looking = False  # a _look_again is scheduled
        self.closed = False
        self.held = False  # the engine cannot take more work now (see hold())
        # Looking at the siblings on every accept costs measurably: the gate looks only near its threshold.
        self.gate = AcceptGate(board)

    async def open(self) -> None:
        servers = []
        try:
            for sock in self.sockets:
                # A dup, so closing the server to pause leaves the inherited descriptor open.
                # listen() is called again on the shared socket: SOMAXCONN is systemd's own Backlog= default.
                copy = socket.socket(fileno=os.dup(sock.fileno()))
                servers.append(await self.loop.create_server(self._protocol, sock=copy, backlog=socket.SOMAXCONN))
        except BaseException:
            for server in servers:
                server.close()
            raise
        if self.closed or self.held:
            for server in servers:
                server.close()
        else:
            self.servers = servers

    def _protocol(self) -> asyncio.Protocol:
        """Called by the loop's accept loop for every connection it accepted."""
        protocol = self.factory()
        if self.connections() + 1 >= self.ceiling and not self.full_check_due:
            self.full_check_due = True  # counted once connection_made ran, one callback later
            self.loop.call_soon(self._pause_if_full)
        board = self.board
        if board is not None:
            board.publish(board.count + 1)  # count it now: connection_made comes one callback later
            if self.gate.near() and not self.check_due:
                # Not from here: closing the server inside its accept callback would drop this connection.
                self.check_due = True
                self.loop.call_soon(self._pause_if_ahead)
        return protocol

    def _pause_if_full(self) -> None:
        self.full_check_due = False
        if self.full or self.connections() < self.ceiling:
            return
        self.full = True
        logger.warning(
            "%d connections open, near the file descriptor limit: not accepting until some close "
            "(new ones wait in the listen backlog)",
            self.connections(),
        )
        if self.board is not None:
            self.board.accepting(False)
        if self.servers:
            self._close_servers()

    def _pause_if_ahead(self) -> None:
        self.check_due = False
        if self.gate.ahead() and self.servers:
            self._close_servers()
            if not self.looking:
                self.looking = True
                self.loop.call_later(PAUSED_LOOK, self._look_again)

    def _look_again(self) -> None:
        """While paused, look again every PAUSED_LOOK as well as on the tick."""
        self.reconsider()
        self.looking = not self.servers and not self.closed and self.opening is None
        if self.looking:
            self.loop.call_later(PAUSED_LOOK, self._look_again)

    def hold(self, held: bool) -> None:
        """Stop accepting while the engine cannot take more work (every WSGI thread busy, requests
        waiting); the siblings are told, so none of them defers to this worker meanwhile."""
        if held == self.held:
            return
        self.held = held
        if self.board is not None:
            self.board.accepting(not held)
        if held:
            self._close_servers()
        else:
            self.reconsider()

    def reconsider(self) -> None:
        """Look at the siblings again (they come, go and change their counts), and accept again once
        this worker is no longer ahead. Called on the tick, and when a connection ends while paused."""
        if self.held:
            return
        if self.full:
            if self.connections() >= limits.resume_below(self.ceiling):
                return
            self.full = False
            logger.info("%d connections open: accepting again", self.connections())
        caught_up = self.gate.caught_up()
        if self.servers or self.closed or self.opening is not None:
            return
        if caught_up:
            self.opening = self.loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            await self.open()
        except OSError as exc:  # EMFILE, ENOBUFS: the tick tries again
            logger.warning("accepting again failed: %s", exc.strerror or exc)
        finally:
            self.opening = None

    def _close_servers(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()

    def close(self) -> None:
        self.closed = True
        self._close_servers()
        if self.opening is not None:
            self.opening.cancel()

    async def wait_closed(self) -> None:
        """uvicorn awaits this on shutdown; accepted connections have their protocol from the accept
        callback on, so there is nothing left to wait for."""


class _Without(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


class StrictLifespan(LifespanOn):
    """Lifespan "auto", told apart properly: an app that fails before it read lifespan.startup does
    not speak lifespan (Django) and is served without it; an app that fails after reading it failed
    its startup, and the worker must exit instead of serving a half-started app."""

    read_startup = False
    failure = ""  # why the startup failed, in one line

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if not hasattr(self, "state"):  # older uvicorn (Debian 12: 0.17.6) keeps no lifespan state
            self.state: dict[str, Any] = {}

    async def receive(self) -> Any:
        message = await super().receive()
        if message["type"] == "lifespan.startup":
            self.read_startup = True
        return message

    async def send(self, message: Any) -> None:
        if message["type"] == "lifespan.startup.failed":
            # Frameworks (Starlette) put a whole traceback here; uvicorn would log every line of it on
            # every attempt. One line goes to the journal (main), the full text at debug priority.
            text = str(message.get("message") or "")
            if text:
                logger.debug("application startup failed:\n%s", text)
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            self.failure = f"application startup failed: {lines[-1] if lines else 'lifespan.startup.failed'}"
            message = {"type": message["type"]}
        await super().send(message)

    async def startup(self) -> None:
        quiet = _Without("Application startup failed. Exiting.")  # main says it, once, with the retry
        self.logger.addFilter(quiet)
        try:
            await super().startup()
        finally:
            self.logger.removeFilter(quiet)

    async def main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.config.loaded_app(scope, self.receive, self.send)
        except BaseException as exc:  # noqa: BLE001 - the app's own failure, reported below in one line
            self.error_occurred = self.error_occured = True
            if self.startup_failed and not self.shutdown_event.is_set() and not self.shutdown_failed:
                from .main import in_full, one_line

                in_full("application startup failed", exc)
                self.failure = f"application startup failed: {one_line(exc)}"  # raised after startup.failed
            elif not (self.startup_failed or self.shutdown_failed):
                self._report(exc)
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    def _report(self, exc: BaseException) -> None:
        from .main import in_full, one_line

        if not self.read_startup:
            logger.info("the app does not handle lifespan events; serving without them")
        elif not self.startup_event.is_set():
            self.startup_failed = True  # reported once, by main, with the wait before the next attempt
            in_full("application startup failed", exc)
            self.failure = f"application startup failed: {one_line(exc)}"
        else:
            self.shutdown_failed = True
            logger.error("application shutdown failed: %s", one_line(exc))


class WorkerServer(uvicorn.Server):
    """uvicorn's Server with READY=1 after lifespan startup, WATCHDOG=1 from the loop, STATUS=, drain."""

    def __init__(
        self,
        config: uvicorn.Config,
        notifier: Notifier,
        drain_timeout: float,
        recycler: Recycler | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        *,
        limits: http11.Limits = http11.DEFAULT_LIMITS,
        pool: Pool | None = None,
        proxies: Any = None,
        health: State | None = None,
        drain_delay: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.health = health  # what /ready and /live answer from (--health-listen)
        self.drain_delay = drain_delay
        self.leave_at: float | None = None  # SIGTERM came: accepting until then, draining after
        self.drain_timeout = drain_timeout
        self.request_timeout = request_timeout
        self.limits = limits
        self.pool = pool  # a WSGI app's threads; None for an ASGI app
        self.proxies = proxies
        self.pulse = Pulse(notifier, None, recycler)
        self.loop_watch: LoopWatch | None = None
        self.admission: Admission | None = None
        self.site: Site | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if self.pool is None:
            self.lifespan = StrictLifespan(config)
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                raise RuntimeFailure(self.lifespan.failure or "application startup failed")
        else:
            self.lifespan = LifespanOff(config)  # WSGI has no lifespan
            self.pool.on_saturated = lambda: self.admission.hold(True) if self.admission else None
            self.pool.on_free = lambda: self.admission.hold(False) if self.admission else None
            self.pool.start()
        board = self.pulse.board = for_this_worker()
        if board is None and self.health is not None:
            self.health.others = None  # no slot of its own to mark leaving: /ready answers for this worker alone
        recycler = self.pulse.recycler
        on_request = None
        if recycler is not None and recycler.request_limit:

            def on_request(requests: int) -> None:
                if recycler.served(requests):
                    self._stop_taking_work()

        self.site = Site(
            config,
            self.server_state,
            getattr(self.lifespan, "state", {}),
            board,
            self._reconsider_if_paused,
            self.limits,
            wsgi=self.pool,
            on_request=on_request,
            proxies=self.proxies,
        )
        state = self.server_state
        self.admission = Admission(sockets or [], self.site.protocol, board, lambda: len(state.connections))
        await self.admission.open()
        self.servers = [self.admission]  # type: ignore[list-item]  # uvicorn closes these on shutdown
        self.started = True
        self.pulse.ready()
        if self.health is not None:
            self.health.ready = True
        if self.pool is None:
            self.watch_loop()
        logger.info(
            "ready: serving %d socket(s)%s",
            len(sockets or []),
            f" with {self.pool.threads} threads (WSGI)" if self.pool is not None else "",
        )

    def watch_loop(self) -> None:
        """A blocked loop stops the pings by itself; the watch names the request blocking it, before
        systemd's kill: after the request timeout, or half of WatchdogSec= when that comes first."""
        limit = loop_limit(self.request_timeout, self.pulse.watchdog)
        if limit is not None:
            self.loop_watch = LoopWatch(limit, self._publish_blocked)
            self.loop_watch.start()

    def _publish_blocked(self, seconds: float) -> None:
        """From the watch's thread, while the loop cannot publish STATUS= itself."""
        state = self.server_state
        line = self.pulse.status_line(state.total_requests, len(state.tasks), 0.0, format_loop_blocked(seconds))
        self.pulse.notifier.status(line)

    async def on_tick(self, counter: int) -> bool:
        state = self.server_state
        if self.loop_watch is not None:
            self.loop_watch.beat()
        healthy, stuck, in_flight = True, "", len(state.tasks)
        pool = self.pool
        if pool is not None:
            # A WSGI worker whose every thread is stuck in the app serves nothing: no WATCHDOG=1, and
            # no accepting while every thread is busy with one long call.
            now = time.monotonic()
            verdict = pool.calls.check(now)
            healthy, stuck, in_flight = not verdict.all_stuck, verdict.text, pool.busy()
        if self.health is not None:
            self.health.beat(threads_stuck=not healthy)
        if self.pulse.tick(state.total_requests, in_flight, len(state.connections), healthy=healthy, stuck=stuck):
            self.should_exit = True  # recycling: the drain SIGTERM starts
        if self.leave_at is not None and (time.monotonic() >= self.leave_at or self._others_serve()):
            self.should_exit = True  # the drain delay is over, or not needed: stop accepting, drain
        if self.admission is not None:
            self.admission.reconsider()
        if self.site is not None:
            self.site.tick()
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM (SIGINT): with --drain-delay the worker goes on serving and accepting for that long, so
        that load balancers, told by /ready, stop sending work to this host before it stops accepting.
        Only while no other worker of the app serves: one that does keeps the shared socket answered
        and /ready at 200 (a rolling reload, a scale-down), so the next tick drains at once. A second
        signal during the delay drains at once."""
        if self.drain_delay <= 0 or self.leave_at is not None or self.should_exit:
            self._leaving()
            super().handle_exit(sig, frame)
            return
        # Marked leaving before any look at the siblings: of workers told to stop together, none can
        # count on another (each sees the others leaving by its first tick), so all wait the delay.
        self._leaving()
        self.leave_at = time.monotonic() + self.drain_delay
        self.pulse.leaving = f"accepting {self.drain_delay:g} s more unless another worker serves, then draining"
        self.pulse.notifier.status(
            self.pulse.status_line(self.server_state.total_requests, len(self.server_state.tasks), 0.0)
        )
        logger.info(
            "leaving: accepting for %g s more (--drain-delay) unless another worker serves, then draining",
            self.drain_delay,
        )

    def _others_serve(self) -> bool:
        """Another worker of the app serves (None of this without the scoreboard: the delay is kept)."""
        board = self.pulse.board
        if board is None or not others_serving(board.prefix):
            return False
        logger.info("leaving: another worker serves, so no drain delay; draining")
        return True

    def _leaving(self) -> None:
        if self.pulse.board is not None:
            self.pulse.board.leave()  # first: a probe answered in between must not count this worker
        if self.health is not None:
            self.health.leaving = True

    async def _beat_while_draining(self) -> None:
        """The tick stops once the drain begins; the loop still runs, so /live stays honest meanwhile."""
        assert self.health is not None
        while True:
            self.health.beat()
            await asyncio.sleep(0.1)

    def _stop_taking_work(self) -> None:
        """A request reached --max-requests between ticks: accept nothing more and end keep-alive
        connections after their response now, as shutdown() begins; the next tick drains."""
        self.should_exit = True
        if self.admission is not None:
            self.admission.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()

    def _reconsider_if_paused(self) -> None:
        """A connection ended: a paused worker may accept again (this runs per connection, so only while paused)."""
        admission = self.admission
        if admission is not None and not admission.servers:
            admission.reconsider()

    def _drain_expired(self) -> None:
        logger.warning(
            "drain deadline passed with %d connection(s) open; closing them", len(self.server_state.connections)
        )
        for connection in list(self.server_state.connections):
            connection.transport.close()
        for task in list(self.server_state.tasks):
            task.cancel()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._leaving()
        beating = asyncio.get_running_loop().create_task(self._beat_while_draining()) if self.health else None
        try:
            await self._drain(sockets)
        finally:
            if beating is not None:
                beating.cancel()

    async def _drain(self, sockets: list[socket.socket] | None) -> None:
        if self.admission is not None:
            self.admission.close()
        if self.loop_watch is not None:
            self.loop_watch.stop()
        self.pulse.stopping(len(self.server_state.tasks))
        self.config.timeout_graceful_shutdown = self.drain_timeout  # type: ignore[assignment]
        deadline = None
        if "timeout_graceful_shutdown" not in inspect.signature(uvicorn.Config.__init__).parameters:
            # older uvicorn (Debian 12: 0.17.6) waits for connections without a deadline: enforce ours.
            deadline = asyncio.get_running_loop().call_later(self.drain_timeout, self._drain_expired)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            if deadline is not None:
                deadline.cancel()
        if self.pool is not None:
            self.pool.stop()
        # A drain that finished is a clean exit: do not re-raise the captured SIGTERM.
        captured = getattr(self, "_captured_signals", None)  # newer uvicorn only
        if captured is not None:
            captured.clear()


def run(
    app: Any,
    sockets: list[socket.socket],
    *,
    stop_timeout: float,
    access_log: bool,
    notifier: Notifier,
    interface: str = "auto",
    threads: int = 10,
    recycler: Recycler | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    limits: http11.Limits = http11.DEFAULT_LIMITS,
    proxies: Any = None,
    health: State | None = None,
    drain_delay: float = 0.0,
) -> None:
    from .interface import detect

    interface = detect(app) if interface == "auto" else interface
    pool = None
    if interface == "wsgi":
        pool = Pool(app, threads, limits=limits, request_timeout=request_timeout, proxies=proxies)
    config = uvicorn.Config(
        app,
        interface="asgi3" if interface == "wsgi" else interface,  # type: ignore[arg-type]  # WSGI: our pool
        lifespan="off" if interface == "wsgi" else "auto",
        access_log=access_log,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=int(limits.keep_alive) or 1,
    )
    # The drain delay counts inside the stop timeout: what is left of it is the drain's.
    server = WorkerServer(
        config,
        notifier,
        drain_budget(stop_timeout - drain_delay),
        recycler,
        request_timeout,
        limits=limits,
        pool=pool,
        proxies=proxies,
        health=health,
        drain_delay=drain_delay,
    )
    server.run(sockets=sockets)
