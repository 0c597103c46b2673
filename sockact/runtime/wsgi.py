"""The WSGI engine: waitress's threaded server on the adopted sockets, with our serving loop.

waitress parses HTTP and runs the app in its thread pool; this module owns the loop around it,
so WSGI workers get what ASGI workers get: READY=1, WATCHDOG=1 from the loop, STATUS=, the
least-connections scoreboard, a drain that never resets a request already on the wire, and the
request timeout: while every thread has run one app call for longer than it, no WATCHDOG=1 (stuck.Calls).
"""

from __future__ import annotations

import itertools
import logging
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any, Callable

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer, UnixWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from .balance import AcceptGate, for_this_worker
from .notify import Notifier
from .pulse import IDLE_GRACE, Pulse, drain_budget
from .recycle import Recycler
from .stuck import DEFAULT_REQUEST_TIMEOUT, Calls

logger = logging.getLogger("sockact.runtime")
access = logging.getLogger("sockact.access")

TICK = 0.1  # the serving loop wakes at least this often


class Counter:
    """Requests served, counted from the app's threads (next() on itertools.count is atomic);
    with access_log, one line per request as uvicorn writes them for ASGI apps."""

    def __init__(self, app: Callable[..., Iterable[bytes]], access_log: bool = False,
                 recycler: Recycler | None = None, on_limit: Callable[[], None] = lambda: None) -> None:
        self.app = app
        self._count = itertools.count(1)
        self.served = 0
        self.access_log = access_log
        self.recycler = recycler
        self.on_limit = on_limit  # a request reached --max-requests

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.served = next(self._count)
        if self.recycler is not None and self.recycler.served(self.served):
            self.on_limit()
        if not self.access_log:
            return self.app(environ, start_response)

        def logged_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            path = environ.get("PATH_INFO", "") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
            access.info('%s - "%s %s %s" %s', environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD"), path,
                        environ.get("SERVER_PROTOCOL"), status)
            return start_response(status, headers, exc_info)

        return self.app(environ, logged_start)


class Engine:
    def __init__(self, app: Any, sockets: list[socket.socket], *, threads: int, stop_timeout: float,
                 notifier: Notifier, access_log: bool = False, recycler: Recycler | None = None,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.counter = Counter(app, access_log, recycler, self._stop_taking_work)
        self.calls = Calls(max(1, threads), request_timeout)
        # Every thread held by a long app call: stop accepting (waitress would queue the connections
        # behind them) and tell the siblings, so the backlog goes to them.
        self.saturated = False
        self.stop_timeout = stop_timeout
        self.board = for_this_worker()
        self.pulse = Pulse(notifier, self.board, recycler)
        self.map: dict[int, Any] = {}
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(threads)
        self.adj = Adjustments(threads=threads, expose_tracebacks=False, ident="", asyncore_use_poll=True)
        self.servers = [self._server(sock) for sock in sockets]
        self.fixed = len(self.map)  # the listening sockets and the dispatcher's trigger: the rest are connections
        self.should_exit = False
        self.draining_since: float | None = None
        # Least-connections accepting, by the rule every engine uses (balance.AcceptGate).
        self.paused = False
        self.gate = AcceptGate(self.board)

    def _server(self, sock: socket.socket) -> Any:
        base = UnixWSGIServer if sock.family == socket.AF_UNIX else TcpWSGIServer
        engine = self

        class Channel(HTTPChannel):  # type: ignore[misc]
            task_class = _task_class(engine)

            def del_channel(self, map: Any = None) -> None:
                super().del_channel(map)
                engine.publish()
                if engine.paused:
                    engine.reconsider()

        class Server(base):  # type: ignore[misc, valid-type]
            channel_class = Channel

            def readable(self) -> bool:
                return bool(super().readable()) and engine.may_accept()

            def handle_accept(self) -> None:
                # O_NONBLOCK is shared with systemd, which may have reset it when it started a worker.
                self.socket.setblocking(False)
                super().handle_accept()
                engine.publish()

        sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
        # _start=False: never re-call listen() on the inherited socket; accept without it.
        server = Server(self.counter, map=self.map, _start=False, _sock=sock, dispatcher=self.dispatcher,
                        adj=self.adj, sockinfo=sockinfo, bind_socket=False)
        server.accepting = True
        return server

    def connections(self) -> list[Any]:
        return [ch for ch in self.map.values() if isinstance(ch, HTTPChannel)]

    def publish(self) -> None:
        """The open-connection count for the siblings, on every accept and close: kept O(1)."""
        if self.board is not None:
            self.board.publish(len(self.map) - self.fixed)

    def may_accept(self) -> bool:
        """Asked by the poll loop on every turn, so the usual answer costs one comparison."""
        if self.draining_since is not None or self.saturated:
            return False
        if not self.paused and self.gate.near():
            self.paused = self.gate.ahead()
        return not self.paused

    def reconsider(self) -> None:
        """Look at the siblings again; accept again once no longer ahead. On the tick, and when a
        connection ends while paused."""
        if self.saturated:
            if self.board is not None:
                self.board.accepting(False)
            return
        if self.gate.caught_up():
            self.paused = False

    def overloaded(self) -> bool:
        if self.draining_since is not None:
            return True
        if self.board is not None and self.board.rebalance_due:
            self.board.rebalance_due -= 1  # this connection moves to a less busy sibling
            return True
        return False

    def in_flight(self) -> int:
        return sum(len(ch.requests) for ch in self.connections())

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.pulse.ready()
        logger.info("ready: serving %d socket(s) with %d threads (WSGI)", len(self.servers), self.adj.threads)
        self._loop()
        self._drain()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.should_exit = True  # the loop acts on it; a handler does no work

    def _stop_taking_work(self) -> None:
        """From an app thread: accept nothing more and close each connection after its response, as
        _drain() begins; the loop, woken by every event, drains on its next turn."""
        self.draining_since = time.monotonic()
        self.should_exit = True

    def _loop(self) -> None:
        while not self.should_exit:
            wasyncore.loop(timeout=TICK, map=self.map, use_poll=True, count=1)
            now = time.monotonic()
            verdict = self.calls.check(now)
            if self.pulse.tick(self.counter.served, self.in_flight(), len(self.connections()),
                               healthy=not verdict.all_stuck, stuck=verdict.text):
                self.should_exit = True  # recycling: the drain SIGTERM starts
            self.saturated = self.calls.saturated(now)
            self.reconsider()

    def _drain(self) -> None:
        self.draining_since = time.monotonic()
        for server in self.servers:
            server.accepting = False
            server.del_channel()  # stop polling the listening socket; systemd keeps it open
        self.pulse.stopping(self.in_flight())
        self.board = None
        deadline = self.draining_since + drain_budget(self.stop_timeout)
        while self.connections() and time.monotonic() < deadline:
            self._close_idle()
            wasyncore.loop(timeout=TICK / 2, map=self.map, use_poll=True, count=1)
        left = self.in_flight()
        if left:
            logger.error("drain deadline reached with %d request(s) in flight; closing them", left)
        # Threads still running the app are daemon threads: they end with the process.
        self.dispatcher.shutdown(cancel_pending=True, timeout=0.2)
        wasyncore.close_all(self.map)

    def _close_idle(self) -> None:
        assert self.draining_since is not None
        if time.monotonic() - self.draining_since < IDLE_GRACE:
            return
        for channel in self.connections():
            if not channel.requests and not channel.total_outbufs_len:
                channel.handle_close()


def _task_class(engine: Engine) -> type:
    class Task(WSGITask):  # type: ignore[misc]
        def execute(self) -> None:
            engine.calls.begin(self.request.command, self.request.path)
            try:
                super().execute()
            finally:
                engine.calls.end()

        def build_response_header(self) -> bytes:
            # Draining, or more keep-alive connections than a sibling: answer this one with
            # Connection: close, so the client's next request goes to a worker that stays.
            if engine.overloaded():
                self.set_close_on_finish()
            return super().build_response_header()  # type: ignore[no-any-return]

    return Task


def run(app: Any, sockets: list[socket.socket], *, threads: int, stop_timeout: float, notifier: Notifier,
        access_log: bool = False, recycler: Recycler | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
    Engine(app, sockets, threads=threads, stop_timeout=stop_timeout, notifier=notifier, access_log=access_log,
           recycler=recycler, request_timeout=request_timeout).serve()
