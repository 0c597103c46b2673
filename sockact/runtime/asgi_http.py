"""sockact's own HTTP/1.1 protocol for ASGI apps, on asyncio (uvloop when installed) and httptools.

uvicorn's httptools protocol does more work per request than serving needs: a timer handle made and
cancelled on every keep-alive turn, a flow-control object, header checks by regular expression,
trace-logging checks. Measured with the same app, loop and parser (1 worker, wrk, 32 connections,
loopback): 27 µs of worker CPU per keep-alive request against uvicorn's 38 µs, and 91 against 120 µs
with `Connection: close`. This one keeps what a server owes its clients (keep-alive, pipelining,
streamed request bodies with back-pressure, chunked responses, HEAD, 100-continue, a 500 when the
app fails, idle and slow-request timeouts, a drain that resets no request) and pays for the rest
once per connection or once a second:

- timeouts come from one sweep over the connections a second (from uvicorn's tick), not a timer per
  request;
- the head is written with the first body part: one write (one send()) for a small response;
- CR or LF smuggled into a response header is caught by counting line ends in the built head.

WebSocket upgrades are handed to uvicorn's WebSocket protocol when one is installed (as uvicorn does).
The Server around it (lifespan, signals, tick, shutdown) is still uvicorn's: see server.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote

import httptools

from .balance import Scoreboard
from .pulse import IDLE_GRACE

if TYPE_CHECKING:
    from .forwarded import ProxyTrust

logger = logging.getLogger("sockact.runtime")
access = logging.getLogger("sockact.access")

MAX_HEAD = 64 * 1024  # request line and headers, as the WSGI engine allows
HIGH_WATER = 64 * 1024  # request body buffered before reading pauses until the app reads it
REQUEST_TIMEOUT = 60.0  # a request head still arriving after this long is dropped (slow-trickle clients)
SWEEP_EVERY = 10  # ticks (1 s) between timeout sweeps
NO_BODY_STATUS = frozenset({204, 304}) | frozenset(range(100, 200))
DISCONNECT = {"type": "http.disconnect"}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


STATUS_LINES = {int(status): _status_line(int(status)) for status in HTTPStatus}


def plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (STATUS_LINES.get(status) or _status_line(status)) + (
        b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def address(info: Any) -> tuple[str, int] | None:
    """(host, port) of a TCP socket name; None for a Unix socket (as uvicorn gives)."""
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class Site:
    """What every connection of this worker shares: the app, its state, the scoreboard."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], board: Scoreboard | None,
                 reconsider: Callable[[], None]) -> None:
        self.config = config
        self.app = config.loaded_app
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.board = board
        self.reconsider = reconsider  # Admission.reconsider while paused, else nothing
        self.access_log = bool(config.access_log)
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.root_path: str = config.root_path or ""
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.ws_protocol_class = getattr(config, "ws_protocol_class", None)
        # older uvicorn (Debian 12: 0.17.6): protocols take no app_state.
        self._ws_extra: dict[str, Any] = {}
        if self.ws_protocol_class is not None and "app_state" in inspect.signature(
                self.ws_protocol_class.__init__).parameters:
            self._ws_extra = {"app_state": app_state}
        self.clock = time.monotonic()  # advanced by sweep(): connections read it instead of a clock call
        self._defaults_from: Any = None
        self._defaults = b""
        self._ticks = 0
        self.warned_websocket = False
        self.forwarded: ProxyTrust | None = None  # --forwarded-allow-ips; None: nothing runs per request

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


class Exchange:
    """One request and its response: the scope, receive() and send() the app is called with."""

    __slots__ = ("body", "body_done", "body_given", "body_size", "chunked", "complete", "connection",
                 "disconnected", "expect_continue", "expected", "head", "keep_alive", "scope", "sent",
                 "skip_body", "started", "status", "woken")

    def __init__(self, connection: HttpConnection, scope: dict[str, Any], keep_alive: bool) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_done = False  # the whole request body has arrived
        self.body_given = False  # the app got more_body=False
        self.expect_continue = False
        self.woken: asyncio.Event | None = None  # made when receive() first has to wait
        self.disconnected = False
        self.started = False
        self.complete = False
        self.head: bytes | None = None  # written with the first body part
        self.chunked = False
        self.skip_body = False
        self.expected = -1  # the response's Content-Length, -1 without one
        self.sent = 0
        self.status = 0

    def wake(self) -> None:
        if self.woken is not None:
            self.woken.set()  # every receive() waiting (an app may have more than one) looks again

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
                logger.exception("error in the app serving %s %s", self.scope["method"], self.scope["path"])
            if not self.started:
                connection.fail(500, "Internal Server Error")
            elif not self.complete:  # cut short: the client must not take it for the whole response
                connection.transport.close()
            return
        if self.disconnected:
            return
        if not self.started:
            logger.error("the app returned without starting a response to %s %s", self.scope["method"], self.scope["path"])
            connection.fail(500, "Internal Server Error")
        elif not self.complete:
            logger.error("the app returned without finishing its response to %s %s", self.scope["method"], self.scope["path"])
            connection.transport.close()

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if self.expect_continue:
            self.expect_continue = False
            if not (self.disconnected or self.started or self.body or self.body_done):
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
                elif connection.reading_paused:
                    connection.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.body_done}
            if connection.reading_paused and connection.current is self and not self.body_done:
                connection.resume_reading()
            if self.woken is None:
                self.woken = asyncio.Event()
            self.woken.clear()
            await self.woken.wait()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not self.started:
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
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            data = body
            self.sent += len(body)
            if self.expected >= 0 and (self.sent > self.expected or (not more and self.sent < self.expected)):
                raise RuntimeError(f"response body of {self.sent} bytes does not match its Content-Length "
                                   f"of {self.expected}")
        connection = self.connection
        if self.head is not None:
            data = self.head + data
            self.head = None
        if connection.drained is not None:
            await connection.drained
            if self.disconnected:
                return
        if data:
            if not more and not self.keep_alive:
                connection.cork()  # the last part and the FIN leave in one segment
            connection.transport.write(data)
        if not more:
            self.complete = True
            self.wake()
            connection.finished(self)

    def _start(self, message: dict[str, Any]) -> None:
        status = self.status = message["status"]
        connection = self.connection
        defaults = connection.site.default_headers()
        lines = [STATUS_LINES.get(status) or _status_line(status), defaults]
        count = 1
        for name, value in message.get("headers", ()):
            lower = name.lower()
            if lower == b"content-length":
                self.expected = int(value)
            elif lower == b"transfer-encoding":
                self.chunked = value.lower() == b"chunked"
            elif lower == b"connection" and value.lower() == b"close":
                self.keep_alive = False
            lines.append(b"%b: %b\r\n" % (name, value))
            count += 1
        self.skip_body = self.scope["method"] == "HEAD" or status in NO_BODY_STATUS
        if self.expected < 0 and not self.chunked and not self.skip_body:
            if self.scope["http_version"] == "1.1":
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
                count += 1
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
            count += 1
        elif self.scope["http_version"] == "1.0":
            lines.append(b"connection: keep-alive\r\n")  # HTTP/1.0 closes unless told otherwise
            count += 1
        lines.append(b"\r\n")
        head = b"".join(lines)
        # Every header line ends in CRLF; any other CR or LF came from the app's names or values.
        ends = count + defaults.count(b"\n") + 1
        if head.count(b"\n") != ends or head.count(b"\r") != ends:
            raise RuntimeError("response header names and values must not contain CR or LF")
        self.head = head
        self.started = True  # only now: a start that raised above still gets the client a 500


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests as they arrive, serves them one at a time in order."""

    __slots__ = ("began", "client", "current", "drained", "draining", "expect", "failing", "fed",
                 "head_size", "headers", "idle_since", "loop", "parser", "parsing", "pipeline", "reading_paused",
                 "server", "site", "tcp", "transport", "upgrade", "url")

    def __init__(self, site: Site) -> None:
        self.site = site
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.tcp: Any = None  # the transport's socket, while it is TCP and not corked
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.fed = 0  # bytes received after the first part of a request head that is still incomplete
        self.expect = False  # the request being received asked for 100 Continue
        self.began = -1.0  # when the request head being received started arriving, -1 between requests
        self.idle_since = site.clock
        self.current: Exchange | None = None  # the request being served
        self.parsing: Exchange | None = None  # the request whose body is arriving
        self.pipeline: deque[Exchange] | None = None  # requests waiting for the one being served
        self.reading_paused = False
        self.drained: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self.draining = False
        self.upgrade = False
        self.failing: tuple[int, str] | None = None  # a bad request behind ones still being answered

    # asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.site.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.server = address(sock.getsockname())
            try:
                self.client = address(sock.getpeername())
            except OSError:  # already gone
                pass
            if self.server is not None:
                self.tcp = sock

    def cork(self) -> None:
        """Hold back what is written next until the connection closes (TCP_CORK), so that the end of
        the last response and the FIN leave together: one segment fewer per `Connection: close`
        request for both sides' kernels and the client to handle."""
        if self.tcp is not None and self.drained is None:
            try:
                self.tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            except OSError:
                pass
            self.tcp = None

    def connection_lost(self, exc: Exception | None) -> None:
        site = self.site
        site.connections.discard(self)
        for exchange in (self.current, *(self.pipeline or ())):  # the one being parsed is among them
            if exchange is not None and not exchange.complete:
                exchange.disconnected = True
                exchange.wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
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

    def data_received(self, data: bytes) -> None:
        if self.failing is not None:
            return
        if self.began >= 0:  # httptools holds an unfinished header line without calling on_header
            self.fed += len(data)
            if self.fed > MAX_HEAD:
                self._refuse(431, "Request Header Fields Too Large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.upgrade:
                self._hand_to_websocket()
            elif self.parsing is not None:  # an upgrade we do not speak: served as plain HTTP, then closed
                self.on_message_complete()
        except httptools.HttpParserError as exc:
            if self.head_size > MAX_HEAD:
                self._refuse(431, "Request Header Fields Too Large")
            else:
                logger.debug("invalid request from %s: %s", self.client, exc)
                self._refuse(400, "Bad Request")

    def _refuse(self, status: int, text: str) -> None:
        """A request that cannot be served: answered after the requests before it, then closed."""
        if self.current is not None:
            self.failing = (status, text)
            self.pause_reading()
        else:
            self.fail(status, text)

    # httptools --------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.fed = 0
        self.expect = False
        self.began = self.site.clock

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise ValueError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        if name == b"expect":
            self.expect = value.lower() == b"100-continue"
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            raise ValueError("request head too large")

    def on_headers_complete(self) -> None:
        self.began = -1.0
        parser = self.parser
        site = self.site
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if parser.should_upgrade() and self._asks_websocket():
            if site.ws_protocol_class is not None:
                self.upgrade = True
                return
            if not site.warned_websocket:
                site.warned_websocket = True
                logger.warning("a WebSocket upgrade was asked for but no WebSocket library is installed "
                               "(pip install websockets); served as plain HTTP")
        url = self.url
        if b"?" in url or not url.startswith(b"/"):
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        else:
            raw_path, query = url, b""
        path = raw_path.decode("ascii", "surrogateescape")
        if "%" in path:
            path = unquote(path)
        keep_alive = parser.should_keep_alive() and not self.draining and not parser.should_upgrade()
        board = site.board
        if keep_alive and board is not None and board.rebalance_due:
            board.rebalance_due -= 1  # this connection moves to a less busy sibling after this response
            keep_alive = False
        root = site.root_path
        scope = {
            "type": "http", "asgi": site.asgi, "http_version": version, "server": self.server,
            "client": self.client, "scheme": "http", "method": method, "root_path": root,
            "path": root + path if root else path, "raw_path": root.encode() + raw_path if root else raw_path,
            "query_string": query, "headers": self.headers, "state": site.app_state.copy(),
        }
        if site.forwarded is not None:  # hook: --forwarded-allow-ips (forwarded.py) decides client and scheme
            scope["client"], scope["scheme"] = site.forwarded.resolve(self.client, self.headers)
        exchange = Exchange(self, scope, keep_alive)
        if self.expect and version == "1.1":
            exchange.expect_continue = True
        self.parsing = exchange
        if self.current is None:
            self._serve(exchange)
        else:
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(exchange)
            self.pause_reading()  # one request at a time: the next waits in the socket

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return  # the rest of a body the app answered without reading
        exchange.body.append(body)
        exchange.body_size += len(body)
        exchange.wake()
        if exchange.body_size > HIGH_WATER:
            self.pause_reading()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.body_done = True
            exchange.wake()
            self.parsing = None

    # serving ----------------------------------------------------------------------------------------
    def _serve(self, exchange: Exchange) -> None:
        self.current = exchange
        site = self.site
        site.server_state.total_requests += 1
        task = self.loop.create_task(exchange.run(site.app))
        site.tasks.add(task)
        task.add_done_callback(site.tasks.discard)

    def finished(self, exchange: Exchange) -> None:
        """The response to `exchange` is complete: close, serve the next pipelined request, or wait."""
        site = self.site
        if site.access_log:
            scope = exchange.scope
            query = scope["query_string"]
            target = scope["raw_path"] + (b"?" + query if query else b"")
            client = scope["client"]  # the forwarded client, with --forwarded-allow-ips
            host = f"{client[0]}:{client[1]}" if client else "-"
            access.info('%s - "%s %s HTTP/%s" %d', host, scope["method"], target.decode("ascii", "replace"),
                        scope["http_version"], exchange.status)
        self.current = None
        # A body the app did not read to its end is not read on its behalf: the connection closes.
        if not exchange.keep_alive or exchange.disconnected or not exchange.body_done:
            self.transport.close()
            return
        if self.pipeline:
            self._serve(self.pipeline.popleft())
            if not self.pipeline and self.reading_paused and self.parsing is None and self.failing is None:
                self.resume_reading()
            return
        if self.failing is not None:
            self.fail(*self.failing)
            return
        if self.draining:
            self.transport.close()
            return
        self.idle_since = site.clock
        if self.reading_paused:
            self.resume_reading()

    def fail(self, status: int, text: str) -> None:
        """Answer with `status` and close: a malformed request, or an app that failed before responding."""
        if not self.transport.is_closing():
            if self.drained is None:
                self.transport.write(plain_response(status, text))
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
        """From the sweep: close a connection idle past the keep-alive timeout, or one whose request
        head has been trickling in for REQUEST_TIMEOUT."""
        if self.current is not None or self.transport.is_closing():
            return
        if self.began >= 0:
            if now - self.began > REQUEST_TIMEOUT:
                self.fail(408, "Request Timeout")
        elif now - self.idle_since > self.site.keep_alive_timeout:
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
        it is the same head that was arriving at the last look (a client that stalled)."""
        if self.current is not None or self.transport.is_closing():
            return  # busy: closes after its response
        if self.began < 0 or self.began == seen:
            self.transport.close()
        else:
            self.loop.call_later(IDLE_GRACE, self._close_if_idle, self.began)

    # WebSocket ----------------------------------------------------------------------------------------
    def _asks_websocket(self) -> bool:
        return any(name == b"upgrade" and value.lower() == b"websocket" for name, value in self.headers)

    def _hand_to_websocket(self) -> None:
        """Replay the request head to uvicorn's WebSocket protocol and let it own the transport."""
        self.site.connections.discard(self)
        method = self.parser.get_method()
        lines = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        protocol = self.site.ws_protocol()
        protocol.connection_made(self.transport)
        if self.site.forwarded is not None:  # hook: --forwarded-allow-ips, for the scope uvicorn's protocol makes
            protocol.client, protocol.scheme = self.site.forwarded.resolve(  # type: ignore[attr-defined]
                self.client, self.headers, websocket=True)
        protocol.data_received(b"".join(lines))
        self.transport.set_protocol(protocol)
