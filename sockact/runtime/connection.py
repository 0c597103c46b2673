"""sockact's HTTP/1.1 engine: one connection protocol on asyncio (uvloop when installed) for ASGI and WSGI apps.

What a request may be and what a response may say is decided by the sans-I/O core (http11.py); this
module moves bytes between it, the socket and the app, and keeps what a server owes its clients:
keep-alive and pipelining (one request served at a time, in order), streamed request bodies with
back-pressure, 100-continue, a 500 when the app fails before it answers, a cut connection when it
fails after, and timeouts for every way a client can hold a connection: a head that trickles in
(408), a body that stops arriving, a response the client does not read (--send-timeout), an idle
keep-alive connection.

An ASGI app runs as a task per request. A WSGI app runs in a bounded pool of threads (wsgi_threads.py)
on the same connections: its `wsgi.input` reads the body as it arrives, and a thread writing to a
client that does not read waits at most the send timeout.

Costs are paid once per connection or once a second where they can be: timeouts come from one sweep a
second, not a timer per request; the response head leaves with the first body part (one send() for a
small response); the status lines and the default headers are encoded once.

WebSocket upgrades are handed to uvicorn's WebSocket protocol when one is installed (as uvicorn does),
after the requests pipelined before them are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import unquote

from . import http11
from .balance import Scoreboard
from .http11 import CONTINUE, LAST_CHUNK, Head, Limits, ResponseError, ResponseHead
from .pulse import IDLE_GRACE

logger = logging.getLogger("sockact.runtime")
access = logging.getLogger("sockact.access")

HIGH_WATER = 64 * 1024  # request body buffered before reading pauses until the app reads it
LINGER = 2.0  # seconds a closing connection keeps reading (and dropping) what its client still sends
LINGER_BYTES = 1024 * 1024  # ... and at most this much
SWEEP_EVERY = 10  # ticks (0.1 s) between timeout sweeps
DISCONNECT = {"type": "http.disconnect"}


def address(info: Any) -> tuple[str, int] | None:
    """(host, port) of a TCP socket name; None for a Unix socket (as uvicorn gives)."""
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class Site:
    """What every connection of this worker shares: the app, its state, the limits, the scoreboard."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        board: Scoreboard | None,
        reconsider: Callable[[], None],
        limits: Limits = http11.DEFAULT_LIMITS,
        wsgi: Any = None,
        on_request: Callable[[int], None] | None = None,
        proxies: Any = None,
    ) -> None:
        self.config = config
        self.app = config.loaded_app
        self.wsgi = wsgi  # a wsgi_threads.Pool: requests go to its threads instead of becoming tasks
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.board = board
        self.reconsider = reconsider  # Admission.reconsider while paused, else nothing
        self.limits = limits
        self.on_request = on_request  # the recycler's count, only with --max-requests
        self.proxies = proxies  # forwarded.ProxyTrust with --forwarded-allow-ips, else None
        self.access_log = bool(config.access_log)
        self.root_path: str = config.root_path or ""
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.ws_protocol_class = getattr(config, "ws_protocol_class", None) if wsgi is None else None
        # older uvicorn (Debian 12: 0.17.6): protocols take no app_state.
        self._ws_extra: dict[str, Any] = {}
        if (
            self.ws_protocol_class is not None
            and "app_state" in inspect.signature(self.ws_protocol_class.__init__).parameters
        ):
            self._ws_extra = {"app_state": app_state}
        self.clock = time.monotonic()  # advanced by sweep(): connections read it instead of a clock call
        self._defaults_from: Any = None
        self._defaults = b""
        self._ticks = 0
        self.warned_websocket = False

    def default_headers(self) -> bytes:
        """uvicorn's Server refreshes default_headers (the date) every second: encoded once per change."""
        current = self.server_state.default_headers
        if current is not self._defaults_from:
            self._defaults_from = current
            self._defaults = b"".join(b"%s: %s\r\n" % (name, value) for name, value in current)
        return self._defaults

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    def tick(self) -> None:
        """From the server's tick (0.1 s): every SWEEP_EVERY ticks, close idle and stalled connections."""
        self._ticks += 1
        if self._ticks % SWEEP_EVERY:
            return
        now = self.clock = time.monotonic()
        for connection in list(self.connections):
            if isinstance(connection, HttpConnection):
                connection.expire(now)

    def ws_protocol(self) -> asyncio.Protocol:
        cls = self.ws_protocol_class
        assert cls is not None
        protocol: asyncio.Protocol = cls(config=self.config, server_state=self.server_state, **self._ws_extra)
        return protocol


class BaseExchange:
    """One request and its response, whatever runs the app; the connection sees only this much."""

    __slots__ = ("client", "complete", "connection", "disconnected", "head", "head_keep_alive", "keep_alive", "status")

    def __init__(self, connection: HttpConnection, head: Head, keep_alive: bool) -> None:
        self.connection = connection
        self.client: tuple[str, int] | None = connection.client  # as the app sees it (--forwarded-allow-ips)
        self.head = head
        self.keep_alive = keep_alive  # may still turn False (a drain) until the response head is made
        self.head_keep_alive = False  # what the response head said
        self.disconnected = False
        self.complete = False
        self.status = 0

    body_done: bool

    def body_part(self, data: bytes) -> None:
        raise NotImplementedError

    def body_end(self) -> None:
        raise NotImplementedError

    def lost(self) -> None:
        """The client is gone, or its body's framing broke: the app must stop waiting for it."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    @property
    def started(self) -> bool:
        raise NotImplementedError


class Exchange(BaseExchange):
    """An ASGI request: the scope, receive() and send() the app is called with."""

    __slots__ = (
        "body",
        "body_done",
        "body_given",
        "body_size",
        "chunked",
        "expect_continue",
        "expected",
        "pending",
        "response_started",
        "scope",
        "sent",
        "skip_body",
        "woken",
    )

    def __init__(self, connection: HttpConnection, head: Head, keep_alive: bool, scope: dict[str, Any]) -> None:
        super().__init__(connection, head, keep_alive)
        self.scope = scope
        self.client = scope["client"]
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_done = head.content_length == 0  # the whole request body has arrived
        self.body_given = False  # the app got more_body=False
        self.expect_continue = head.expect_continue
        self.woken: asyncio.Event | None = None  # made when receive() first has to wait
        self.response_started = False
        self.pending: bytes | None = None  # the response head, written with the first body part
        self.skip_body = False
        self.chunked = False
        self.expected = -1  # the response's Content-Length, -1 without one
        self.sent = 0

    @property
    def started(self) -> bool:
        return self.response_started

    def wake(self) -> None:
        if self.woken is not None:
            self.woken.set()  # every receive() waiting (an app may have more than one) looks again

    def body_part(self, data: bytes) -> None:
        if self.complete:
            return  # the rest of a body the app answered without reading
        self.body.append(data)
        self.body_size += len(data)
        self.wake()
        if self.body_size > HIGH_WATER:
            self.connection.pause_reading()

    def body_end(self) -> None:
        self.body_done = True
        self.wake()

    def lost(self) -> None:
        self.disconnected = True
        self.wake()

    def start(self) -> None:
        site = self.connection.site
        task = self.connection.loop.create_task(self.run(site.app))
        site.tasks.add(task)
        task.add_done_callback(site.tasks.discard)

    async def run(self, app: Any) -> None:
        connection = self.connection
        if self.disconnected:
            # The client left before the app began (a reset while it waited in the backlog): nobody
            # is there for the answer, and a request that kills its worker must not get a second go.
            return
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException:  # the app's error (cancelled at the drain deadline too)
            if not self.disconnected:
                logger.exception("error in the app serving %s %s", self.head.method, self.scope["path"])
            if not self.response_started or self.pending is not None:
                connection.fail(500)  # nothing of the response was written yet
            elif not self.complete:  # cut short: the client must not take it for the whole response
                connection.transport.close()
            return
        if self.disconnected:
            return
        if not self.response_started:
            logger.error("the app returned without starting a response to %s %s", self.head.method, self.scope["path"])
            connection.fail(500)
        elif not self.complete:
            logger.error(
                "the app returned without finishing its response to %s %s", self.head.method, self.scope["path"]
            )
            connection.transport.close()

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if self.expect_continue:
            self.expect_continue = False
            if not (self.disconnected or self.response_started or self.body or self.body_done):
                connection.transport.write(CONTINUE)
        while True:
            if self.disconnected or self.complete:
                return DISCONNECT
            if self.body or (self.body_done and not self.body_given):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.body_size = 0
                if self.body_done:
                    self.body_given = True
                elif connection.reading_paused and connection.parsing is self:
                    connection.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.body_done}
            if connection.reading_paused and connection.current is self and connection.parsing is self:
                connection.resume_reading()
            if self.woken is None:
                self.woken = asyncio.Event()
            self.woken.clear()
            await self.woken.wait()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message)
            return
        if self.complete:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response was complete")
        if kind != "http.response.body":
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        if self.disconnected:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.skip_body:
            data = b""
        elif self.chunked:
            data = http11.chunk(body) if body else b""
            if not more:
                data += LAST_CHUNK
        else:
            data = body
            self.sent += len(body)
            if self.expected >= 0 and (self.sent > self.expected or (not more and self.sent < self.expected)):
                raise RuntimeError(
                    f"response body of {self.sent} bytes does not match its Content-Length of {self.expected}"
                )
        if self.pending is not None:
            data = self.pending + data
            self.pending = None
        connection = self.connection
        if connection.drained is not None:
            if not await connection.writable():
                self.lost()
                return
            if self.disconnected:
                return
        if data:
            if not more and not self.head_keep_alive:
                connection.cork()  # the last part and the FIN leave in one segment
            connection.transport.write(data)
        if not more:
            self.complete = True
            self.wake()
            connection.finished(self)

    def _start(self, message: dict[str, Any]) -> None:
        connection = self.connection
        try:
            framing = ResponseHead(
                message["status"],
                message.get("headers", ()),
                request_method=self.head.method,
                request_version=self.head.version,
                keep_alive=self.keep_alive,
                extra=connection.site.default_headers(),
            )
        except ResponseError as exc:
            raise RuntimeError(str(exc)) from None  # the app's error: a 500 replaces the response
        self.status = framing.status
        self.keep_alive = self.head_keep_alive = framing.keep_alive
        self.skip_body = framing.skip_body
        self.chunked = framing.chunked
        self.expected = framing.length
        self.pending = framing.data
        self.response_started = True  # only now: a start that raised above still gets the client a 500


def asgi_scope(connection: HttpConnection, head: Head) -> dict[str, Any]:
    site = connection.site
    raw_path = head.path
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path, "latin-1") if not path.isascii() else unquote(path)
    root = site.root_path
    client, scheme = connection.client, "http"
    if site.proxies is not None:
        client, scheme = site.proxies.resolve(connection.client, head.headers)
    return {
        "type": "http",
        "asgi": site.asgi,
        "http_version": head.version,
        "server": connection.server,
        "client": client,
        "scheme": scheme,
        "method": head.method,
        "root_path": root,
        "path": root + path if root else path,
        "raw_path": root.encode() + raw_path if root else raw_path,
        "query_string": head.query,
        "headers": head.headers,
        "state": site.app_state.copy(),
    }


class HttpConnection(asyncio.Protocol, http11.RequestReader):
    """One client connection: requests parsed by the core as bytes arrive, served one at a time in order."""

    def __init__(self, site: Site) -> None:
        http11.RequestReader.__init__(self, site.limits)
        self.site = site
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.tcp: Any = None  # the transport's socket, while it is TCP and not corked
        self.last_seen = site.clock  # when bytes last came (swept: idle keep-alive, stalled bodies)
        self.head_since = -1.0  # when the sweep first saw a request head arriving
        self.current: BaseExchange | None = None  # the request being served
        self.parsing: BaseExchange | None = None  # the request whose body is arriving
        self.pipeline: deque[BaseExchange] | None = None  # requests waiting for the one being served
        self.reading_paused = False
        self.drained: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self.draining = False
        self.failing: tuple[int, str] | None = None  # a refused request behind ones still being answered
        self.upgrading: tuple[Head, bytes] | None = None  # a WebSocket upgrade behind pipelined requests
        self.on_writable: Callable[[], None] | None = None  # a WSGI thread waiting to write
        self.lingering = -1  # bytes still dropped before a closing connection closes; -1 while serving

    # asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.site.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.server = address(sock.getsockname())
            with contextlib.suppress(OSError):  # already gone
                self.client = address(sock.getpeername())
            if self.server is not None:
                self.tcp = sock
        else:  # a transport without a socket object (a test's): its names, if it has them
            self.server = address(transport.get_extra_info("sockname"))
            self.client = address(transport.get_extra_info("peername"))

    def cork(self) -> None:
        """Hold back what is written next until the connection closes (TCP_CORK), so that the end of
        the last response and the FIN leave together: one segment fewer per `Connection: close`
        request for both sides' kernels and the client to handle."""
        if self.tcp is not None and self.drained is None:
            with contextlib.suppress(OSError):
                self.tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            self.tcp = None

    def connection_lost(self, exc: Exception | None) -> None:
        site = self.site
        site.connections.discard(self)
        for exchange in (self.current, self.parsing, *(self.pipeline or ())):
            if exchange is not None and not exchange.complete:
                exchange.lost()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.on_writable is not None:
            self.on_writable()
        board = site.board
        if board is not None:
            board.publish(len(site.connections))
            site.reconsider()

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
        if self.on_writable is not None:
            self.on_writable()

    async def writable(self) -> bool:
        """Wait until the client takes what was written; False if it took nothing for the send timeout
        (the connection is then dropped: a client that does not read holds no request for long)."""
        drained = self.drained
        if drained is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(drained), self.site.limits.send_timeout)
        except asyncio.TimeoutError:
            logger.info("dropping a client that read nothing for %g s (--send-timeout)", self.site.limits.send_timeout)
            self.transport.abort()
            return False
        return not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.lingering >= 0:
            self.lingering -= len(data)
            if self.lingering < 0:
                self.transport.close()
            return
        self.last_seen = self.site.clock
        self.feed(data)

    def linger(self) -> None:
        """Close after an answer sent before the client finished sending: stop writing (FIN) and drop
        what still comes for up to LINGER seconds or LINGER_BYTES, then close. Closing at once with
        unread bytes would make the kernel send a reset, which can destroy the answer before the
        client reads it (a 413, or a 401 to an upload)."""
        if self.lingering >= 0 or self.transport.is_closing():
            return
        self.lingering = LINGER_BYTES
        self.parsing = None
        try:
            self.transport.write_eof()
        except (AttributeError, NotImplementedError, OSError, RuntimeError):  # a transport that cannot half-close
            self.transport.close()
            return
        self.resume_reading()
        self.loop.call_later(LINGER, self.transport.close)

    # the core's callbacks ---------------------------------------------------------------------------
    def wants_upgrade(self, token: bytes) -> bool:
        if token != b"websocket":
            return False
        site = self.site
        if site.ws_protocol_class is not None:
            return True
        if not site.warned_websocket and site.wsgi is None:
            site.warned_websocket = True
            logger.warning(
                "a WebSocket upgrade was asked for but no WebSocket library is installed "
                "(pip install websockets); served as plain HTTP"
            )
        return False

    def request_head(self, head: Head) -> None:
        self.head_since = -1.0
        site = self.site
        keep_alive = head.keep_alive and not self.draining
        board = site.board
        if keep_alive and board is not None and board.rebalance_due:
            board.rebalance_due -= 1  # this connection moves to a less busy sibling after this response
            keep_alive = False
        if site.wsgi is not None:
            exchange: BaseExchange = site.wsgi.exchange(self, head, keep_alive)
        else:
            exchange = Exchange(self, head, keep_alive, asgi_scope(self, head))
        if not exchange.body_done:
            self.parsing = exchange
        if self.current is None:
            self._serve(exchange)
        else:
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(exchange)
            self.pause_reading()  # one request at a time: the next waits in the socket

    def request_body(self, data: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.body_part(data)

    def request_end(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            exchange.body_end()

    def request_error(self, status: int, reason: str) -> None:
        logger.debug("refused a request from %s: %d %s", self.client, status, reason)
        broken = self.parsing
        if broken is not None:
            # The framing of a body broke (or it grew past the limit): its app stops waiting for it.
            self.parsing = None
            broken.lost()
            if self.pipeline and broken in self.pipeline:
                self.pipeline.remove(broken)
            elif broken is self.current:
                if broken.started:
                    self.transport.close()
                else:
                    self.fail(status, reason)
                return
        if self.current is None:
            self.fail(status, reason)
        else:
            self.failing = (status, reason)  # answered after the requests before it
            self.pause_reading()

    def request_upgrade(self, head: Head, rest: bytes) -> None:
        if self.current is None:
            self._hand_to_websocket(head, rest)
        else:
            self.upgrading = (head, rest)  # after the responses to the requests before it
            self.pause_reading()

    # serving ----------------------------------------------------------------------------------------
    def _serve(self, exchange: BaseExchange) -> None:
        self.current = exchange
        site = self.site
        state = site.server_state
        state.total_requests += 1
        if site.on_request is not None:
            site.on_request(state.total_requests)
        exchange.start()

    def finished(self, exchange: BaseExchange) -> None:
        """The response to `exchange` is complete: close, serve the next pipelined request, or wait."""
        site = self.site
        if site.access_log:
            self._log(exchange)
        self.current = None
        # A body the app did not read to its end is not read on its behalf: the connection closes.
        if not exchange.body_done and not exchange.disconnected:
            self.linger()
            return
        # What the response told the client decides, not what changed since: a drain (or a recycle)
        # that began after the head left keep-alive open must not close under the client's next request.
        if not exchange.head_keep_alive or exchange.disconnected:
            self.transport.close()
            return
        if self.pipeline:
            self._serve(self.pipeline.popleft())
            if (
                not self.pipeline
                and self.reading_paused
                and self.parsing is None
                and self.failing is None
                and self.upgrading is None
            ):
                self.resume_reading()
            return
        if self.failing is not None:
            self.fail(*self.failing)
            return
        if self.upgrading is not None:
            self._hand_to_websocket(*self.upgrading)
            return
        self.last_seen = site.clock
        if self.reading_paused:
            self.resume_reading()
        if self.draining:
            # As for a connection idle when the drain began: a request already on the wire gets
            # IDLE_GRACE to arrive, and is answered with Connection: close.
            self.loop.call_later(IDLE_GRACE, self._close_if_idle)

    def _log(self, exchange: BaseExchange) -> None:
        head = exchange.head
        client = exchange.client  # the forwarded client, with --forwarded-allow-ips
        host = f"{client[0]}:{client[1]}" if client else "-"
        # The core let no control byte or space into a target; a quote would end the logged field.
        target = head.target.replace(b'"', b"%22").decode("ascii", "backslashreplace")
        access.info('%s - "%s %s HTTP/%s" %d', host, head.method, target, head.version, exchange.status)

    def fail(self, status: int, reason: str | None = None) -> None:
        """Answer with `status` and close: a refused request, or an app that failed before responding.
        A client that may still be sending gets the lingering close (a refused request, an unread body)."""
        if not self.transport.is_closing():
            if self.drained is None:
                self.transport.write(http11.error_response(status, _public(status, reason)))
            if self.failed or self.parsing is not None or self.receiving_head:
                self.linger()
            else:
                self.transport.close()

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    # timeouts and drain -----------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """From the sweep (1 s): drop a connection whose request head has been arriving for longer
        than the head timeout (408), whose body stopped arriving for as long, or that sat idle
        between requests past the keep-alive timeout."""
        if self.transport.is_closing():
            return
        limits = self.site.limits
        if self.receiving_head and not self.failed:
            if self.head_since < 0:
                self.head_since = now
            elif now - self.head_since > limits.head_timeout and self.current is None:
                self.fail(408)
            return
        self.head_since = -1.0
        parsing = self.parsing
        if parsing is not None:
            if not self.reading_paused and now - self.last_seen > limits.head_timeout:
                logger.info("dropping a client whose request body stopped arriving for %g s", limits.head_timeout)
                self.request_error(408, "Request Timeout")
            return
        if self.current is None and now - self.last_seen > limits.keep_alive:
            self.transport.close()

    def shutdown(self) -> None:
        """Called by the Server for every connection when draining starts: a connection between
        requests gets IDLE_GRACE for a request already on the wire, a busy one closes after its response."""
        self.draining = True
        for exchange in (self.current, *(self.pipeline or ())):
            if exchange is not None:
                exchange.keep_alive = False
        if self.current is None:
            self.loop.call_later(IDLE_GRACE, self._close_if_idle)

    def _close_if_idle(self, seen: float = -2.0) -> None:
        """Close once idle; a request head still arriving gets another IDLE_GRACE, and is dropped if
        no byte came since the last look (a client that stalled)."""
        if self.current is not None or self.transport.is_closing():
            return  # busy: closes after its response
        if not self.receiving_head or self.last_seen == seen:
            self.transport.close()
        else:
            self.loop.call_later(IDLE_GRACE, self._close_if_idle, self.last_seen)

    # WebSocket ----------------------------------------------------------------------------------------
    def _hand_to_websocket(self, head: Head, rest: bytes) -> None:
        """Replay the request head (and what followed it) to uvicorn's WebSocket protocol and let it
        own the transport."""
        self.upgrading = None
        self.site.connections.discard(self)
        lines = [head.method.encode(), b" ", head.target, b" HTTP/", head.version.encode(), b"\r\n"]
        for name, value in head.headers:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        if rest:
            # RFC 6455 §4.1: a client sends nothing after its handshake request before the 101; what it
            # sent anyway is neither frames nor a request of this connection (dropped, as uvicorn does).
            logger.debug("dropped %d bytes sent after a WebSocket handshake request", len(rest))
        protocol = self.site.ws_protocol()
        # The transport first: should the WebSocket protocol fail on the head, the loop closes the
        # transport and tells that protocol (connection_lost), which leaves the connection set.
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.site.proxies is not None:  # --forwarded-allow-ips, for the scope uvicorn's protocol makes
            protocol.client, protocol.scheme = self.site.proxies.resolve(  # type: ignore[attr-defined]
                self.client, head.headers, websocket=True
            )
        protocol.data_received(b"".join(lines))
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()


_PUBLIC = {400, 408, 413, 414, 431, 501, 505}


def _public(status: int, reason: str | None) -> str | None:
    """The text a client gets: the core's reason for a refused request (it names the rule, never
    anything of the app), the bare phrase otherwise."""
    return reason if status in _PUBLIC else None
