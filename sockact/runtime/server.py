"""The serving engine: uvicorn's Server on adopted sockets, with our accept loop, notify and drain."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import Any, Callable

import uvicorn
from uvicorn.lifespan.on import LifespanOn

from .balance import Scoreboard, for_this_worker
from .notify import Notifier
from .pulse import IDLE_GRACE, Pulse, drain_budget

logger = logging.getLogger("sockact.runtime")

DEFER = 0.0005  # how long a busier worker leaves a new connection to a less busy sibling
DEFER_MAX = 0.002


class Acceptor:
    """Accepts from one shared listening socket, while this worker is the least busy one.

    asyncio's own server accepts up to `backlog` connections in one go, so whichever worker wakes
    first takes the whole queue. Here each accept first asks the scoreboard (balance.py), and a
    batch stops as soon as a sibling has fewer connections.
    It also never re-calls listen() on the inherited socket (asyncio's create_server would).
    """

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol],
                 board: Scoreboard | None = None, batch: int = 16) -> None:
        self.sock = sock
        self.factory = factory
        self.board = board
        self.batch = batch
        self.deferred_since: float | None = None
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.pending: set[asyncio.Task[None]] = set()  # accepted, protocol not made yet
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        board = self.board
        if board is not None and not board.least_loaded():
            # A sibling with fewer connections was woken too and takes this one. Look again
            # shortly; if the connection is still waiting after DEFER_MAX, that sibling is busy.
            now = self.loop.time()
            if self.deferred_since is None:
                self.deferred_since = now
            if now - self.deferred_since < DEFER_MAX:
                self._pause(DEFER)
                return
        self.deferred_since = None
        # The file status flags are shared with every worker and with systemd, which resets
        # O_NONBLOCK whenever it starts a worker (unless the socket unit says NonBlocking=yes).
        self.sock.setblocking(False)
        for taken in range(self.batch):
            if taken and board is not None and not board.least_loaded():
                return  # the rest of the queue is for a less busy sibling
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS: back off instead of spinning
                logger.warning("accept failed: %s; pausing accepts for 0.1 s", exc.strerror)
                self._pause(0.1)
                return
            if board is not None:
                board.pending += 1
                board.publish(board.count + 1)  # count it now, before the protocol exists
            task = self.loop.create_task(self._connect(conn))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()
        finally:
            if self.board is not None:
                self.board.pending -= 1  # now in the server's connection set, or gone

    def _pause(self, seconds: float) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        """Until every accepted connection has its protocol, so the drain reaches it too."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


def draining_protocol(base: type, board: Scoreboard | None) -> type:
    """The configured HTTP protocol, changed so a drain never resets a request on the wire,
    and publishing this worker's open-connection count for least-connections accepting."""

    class Draining(base):  # type: ignore[misc]
        draining = False

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if board is not None:
                board.publish(len(self.server_state.connections) + board.pending)

        def shutdown(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.draining = True
                self.loop.call_later(IDLE_GRACE, self._close_if_idle)
            else:
                self.cycle.keep_alive = False

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and cycle.keep_alive:
                if self.draining:
                    cycle.keep_alive = False
                elif board is not None and board.rebalance_due:
                    board.rebalance_due = False  # one connection per tick moves to a less busy sibling
                    cycle.keep_alive = False

        def _close_if_idle(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.transport.close()

    Draining.__name__ = f"Draining{base.__name__}"
    return Draining


class StrictLifespan(LifespanOn):
    """Lifespan "auto", told apart properly: an app that fails before it read lifespan.startup does
    not speak lifespan (Django) and is served without it; an app that fails after reading it failed
    its startup, and the worker must exit instead of serving a half-started app."""

    read_startup = False

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if not hasattr(self, "state"):  # older uvicorn (Debian 12: 0.17.6) keeps no lifespan state
            self.state: dict[str, Any] = {}

    async def receive(self) -> Any:
        message = await super().receive()
        if message["type"] == "lifespan.startup":
            self.read_startup = True
        return message

    async def main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": self.config.asgi_version, "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.config.loaded_app(scope, self.receive, self.send)
        except BaseException as exc:  # the app's own failure, reported below in one line
            self.error_occurred = self.error_occured = True
            if not (self.startup_failed or self.shutdown_failed):
                self._report(exc)
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    def _report(self, exc: BaseException) -> None:
        from .main import one_line

        if not self.read_startup:
            logger.info("the app does not handle lifespan events; serving without them")
        elif not self.startup_event.is_set():
            self.startup_failed = True
            logger.error("application startup failed: %s", one_line(exc))
        else:
            self.shutdown_failed = True
            logger.error("application shutdown failed: %s", one_line(exc))


class WorkerServer(uvicorn.Server):
    """uvicorn's Server with READY=1 after lifespan startup, WATCHDOG=1 from the loop, STATUS=, drain."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self.pulse = Pulse(notifier, None)
        self.acceptors: list[Acceptor] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.lifespan = StrictLifespan(self.config)
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(3)
        config = self.config
        board = self.pulse.board = for_this_worker()
        config.http_protocol_class = draining_protocol(config.http_protocol_class, board)

        protocol_class: Any = config.http_protocol_class

        # older uvicorn (Debian 12: 0.17.6): protocols take no app_state.
        takes_state = "app_state" in inspect.signature(protocol_class.__init__).parameters
        extra = {"app_state": self.lifespan.state} if takes_state else {}

        def create_protocol() -> asyncio.Protocol:
            protocol: asyncio.Protocol = protocol_class(
                config=config, server_state=self.server_state, **extra
            )
            return protocol

        self.acceptors = [Acceptor(sock, create_protocol, board) for sock in sockets or []]
        self.servers = self.acceptors  # type: ignore[assignment]  # uvicorn closes these on shutdown
        self.started = True
        self.pulse.ready()
        logger.info("ready: serving %d socket(s)", len(self.acceptors))

    async def on_tick(self, counter: int) -> bool:
        state, board = self.server_state, self.pulse.board
        pending = board.pending if board is not None else 0  # accepted, not yet in state.connections
        self.pulse.tick(state.total_requests, len(state.tasks), len(state.connections) + pending)
        return await super().on_tick(counter)

    def _drain_expired(self) -> None:
        logger.warning("drain deadline passed with %d connection(s) open; closing them", len(self.server_state.connections))
        for connection in list(self.server_state.connections):
            connection.transport.close()
        for task in list(self.server_state.tasks):
            task.cancel()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self.acceptors:
            acceptor.close()
        for acceptor in self.acceptors:
            await acceptor.wait_closed()
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
        # A drain that finished is a clean exit: do not re-raise the captured SIGTERM.
        captured = getattr(self, "_captured_signals", None)  # newer uvicorn only
        if captured is not None:
            captured.clear()


def run(app: Any, sockets: list[socket.socket], *, stop_timeout: float, access_log: bool, notifier: Notifier,
        interface: str = "auto", threads: int = 10) -> None:
    from .interface import as_asgi

    app, interface = as_asgi(app, interface, threads)
    config = uvicorn.Config(
        app,
        interface=interface,  # type: ignore[arg-type]
        lifespan="auto",
        access_log=access_log,
        log_config=None,
        server_header=False,
        proxy_headers=False,
    )
    server = WorkerServer(config, notifier, drain_budget(stop_timeout))
    server.run(sockets=sockets)
