"""WSGI apps on the HTTP engine (connection.py): a bounded pool of threads, a streaming wsgi.input,
and writes with back-pressure and a deadline.

The event loop parses (http11.py) and moves bytes; a request is handed to the next free thread with
its head only, so an upload is not stored before the app runs: `wsgi.input` reads the body as it
arrives (reading pauses at HIGH_WATER bytes not yet read by the app), and an app that answers
without reading lets the connection close instead of taking the rest. A thread writes by handing
bytes to the loop; it waits only while more than HIGH_WATER bytes wait for the client, and at most
--send-timeout, or 2 s while other requests wait for a thread, so clients that do not read their
responses cannot hold the pool.
"""

from __future__ import annotations

import io
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from . import http11
from .connection import HIGH_WATER, BaseExchange
from .http11 import CONTINUE, LAST_CHUNK, Head, Limits, ResponseError, ResponseHead
from .stuck import SATURATED_AFTER, Calls

if TYPE_CHECKING:
    from .connection import HttpConnection

logger = logging.getLogger("sockact.runtime")

PRESSURE_SEND_TIMEOUT = 2.0  # a thread's longest wait on a client that reads nothing while requests queue
WAIT_SLICE = 0.25


class ClientGone(Exception):
    """The client left, or read nothing for the send timeout. Not an OSError, so the app's own
    OSErrors still count as the app's errors."""


class BodyError(OSError):
    """wsgi.input: the client left, or the body's framing broke, before the body was read."""


def _environ_key(name: bytes) -> str:
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


_KEYS: dict[bytes, str | None] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


def environ_key(name: bytes) -> str | None:
    """The environ key of a (lowercase) header name; None for names with `_`: X_Forwarded_For would
    land on HTTP_X_FORWARDED_FOR beside a proxy's own header, so they are dropped, as gunicorn does."""
    key = _KEYS.get(name, "")
    if key == "":
        key = None if b"_" in name else _environ_key(name)
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


class Pool:
    """The threads that run one worker's WSGI app, and what its environs share."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        threads: int,
        *,
        limits: Limits,
        request_timeout: float,
        root_path: str = "",
        proxies: Any = None,
    ) -> None:
        self.app = app
        self.threads = max(1, threads)
        self.limits = limits
        self.calls = Calls(self.threads, request_timeout)
        self.proxies = proxies
        self.jobs: queue.SimpleQueue[WsgiExchange | None] = queue.SimpleQueue()
        self.base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "SCRIPT_NAME": root_path,
            # wsgi.input ends where the body does (chunked bodies included): apps may read to EOF.
            "wsgi.input_terminated": True,
        }
        self._workers = [
            threading.Thread(target=self._work, name=f"sockact-wsgi-{i}", daemon=True) for i in range(self.threads)
        ]
        # Accepting stops while every thread is held by a call and requests wait (stuck.SATURATED_AFTER),
        # and starts again as soon as a thread is free: the engine sets these.
        self.on_saturated: Callable[[], None] = lambda: None
        self.on_free: Callable[[], None] = lambda: None
        self.loop: Any = None
        self.held = False
        self._check_due = False

    def start(self) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        for thread in self._workers:
            thread.start()

    def submit(self, exchange: WsgiExchange) -> None:
        """From the loop: queue a request; when every thread is busy, look again in SATURATED_AFTER."""
        self.jobs.put(exchange)
        if not self.held and not self._check_due and len(self.calls.running) >= self.threads:
            self._check_due = True
            self.loop.call_later(SATURATED_AFTER, self._check)

    def _check(self) -> None:
        self._check_due = False
        if not self.held and self.jobs.qsize() and self.calls.saturated(time.monotonic()):
            self.held = True
            self.on_saturated()

    def stop(self) -> None:
        """Threads still in the app at the drain deadline are daemons: they end with the process."""
        for _ in self._workers:
            self.jobs.put(None)

    def busy(self) -> int:
        return len(self.calls.running)

    def queued(self) -> int:
        return self.jobs.qsize()

    def exchange(self, connection: HttpConnection, head: Head, keep_alive: bool) -> WsgiExchange:
        return WsgiExchange(connection, head, keep_alive, self)

    def _work(self) -> None:
        jobs = self.jobs
        while True:
            exchange = jobs.get()
            if exchange is None:
                return
            try:
                exchange.run()
            except BaseException:  # a bug must cost one request, never the thread
                logger.exception("unexpected error serving a WSGI request")
            if self.held:  # this thread is free: accept again (a flag read per request, a call only then)
                self.held = False
                self.loop.call_soon_threadsafe(self.on_free)


def _lock_of(connection: HttpConnection) -> threading.Condition:
    cond: threading.Condition | None = getattr(connection, "wsgi_cond", None)
    if cond is None:
        cond = threading.Condition(threading.Lock())
        connection.wsgi_cond = cond  # type: ignore[attr-defined]
    return cond


class WsgiExchange(BaseExchange):
    """One WSGI request: built by the loop, run by a pool thread."""

    __slots__ = (
        "body",
        "body_done",
        "buffered",
        "chunked",
        "cond",
        "continue_due",
        "expected",
        "framing",
        "head_written",
        "headers_out",
        "pool",
        "queued",
        "sent",
        "skip_body",
        "status_line",
        "writer_waiting",
    )

    def __init__(self, connection: HttpConnection, head: Head, keep_alive: bool, pool: Pool) -> None:
        super().__init__(connection, head, keep_alive)
        self.pool = pool
        self.cond = _lock_of(connection)
        self.body: list[bytes] = []
        self.buffered = 0  # body bytes arrived and not read by the app
        self.body_done = head.content_length == 0
        self.continue_due = head.expect_continue
        self.status_line: bytes | None = None
        self.headers_out: list[tuple[bytes, bytes]] = []
        self.framing: ResponseHead | None = None
        self.head_written = False
        self.skip_body = self.chunked = False
        self.expected = -1
        self.sent = 0
        self.queued = 0  # bytes handed to the loop and not yet given to the transport
        self.writer_waiting = False

    @property
    def started(self) -> bool:
        return self.head_written

    # the loop's side ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.pool.submit(self)

    def body_part(self, data: bytes) -> None:
        if self.complete:
            return
        with self.cond:
            self.body.append(data)
            self.buffered += len(data)
            self.cond.notify_all()
        if self.buffered > HIGH_WATER:
            self.connection.pause_reading()

    def body_end(self) -> None:
        with self.cond:
            self.body_done = True
            self.cond.notify_all()

    def lost(self) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _writable(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _deliver(self, data: bytes, last: bool) -> None:
        connection = self.connection
        if not self.disconnected and not connection.transport.is_closing():
            if last and not self.head_keep_alive:
                connection.cork()
            connection.transport.write(data)
        with self.cond:
            self.queued -= len(data)
            if self.writer_waiting:
                self.cond.notify_all()
        if last and not self.disconnected:
            self.complete = True
            connection.on_writable = None
            connection.finished(self)

    def _fail(self) -> None:
        connection = self.connection
        connection.on_writable = None
        if self.head_written:
            connection.transport.close()  # cut short: the client must not take it for the whole response
        else:
            connection.fail(500)

    # the thread's side --------------------------------------------------------------------------------
    def run(self) -> None:
        if self.disconnected:
            return  # the client left before the app began
        pool = self.pool
        environ = self.environ()
        pool.calls.begin(self.head.method, environ["PATH_INFO"])
        result: Iterable[bytes] | None = None
        try:
            result = pool.app(environ, self.start_response)
            if type(result) is list and self.status_line is not None and not self.head_written:
                self._send_whole(b"".join(result) if len(result) != 1 else result[0])
            else:
                for data in result:
                    if data:
                        self.write(data)
                self._finish()
        except ClientGone:
            pass
        except BaseException:  # the app's error (SystemExit too): a 500 when nothing was sent yet, else a cut
            if not self.disconnected:
                logger.exception("error in the app serving %s %s", self.head.method, environ.get("PATH_INFO", ""))
            self.connection.loop.call_soon_threadsafe(self._fail)
        finally:
            pool.calls.end()
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("error closing the app's response")

    def environ(self) -> dict[str, Any]:
        pool = self.pool
        head = self.head
        connection = self.connection
        env = pool.base_environ.copy()
        path = head.path
        if b"%" in path:
            path = unquote_to_bytes(path)
        env["REQUEST_METHOD"] = head.method
        env["PATH_INFO"] = path.decode("latin-1")
        env["QUERY_STRING"] = head.query.decode("latin-1")
        env["RAW_URI"] = env["REQUEST_URI"] = head.target.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/" + head.version
        server = connection.server
        env["SERVER_NAME"], env["SERVER_PORT"] = (server[0], str(server[1])) if server else ("localhost", "80")
        client = connection.client
        if client:
            env["REMOTE_ADDR"] = client[0]
            env["REMOTE_PORT"] = str(client[1])
        if pool.proxies is not None:  # --forwarded-allow-ips: REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme, HTTPS
            pool.proxies.apply_to_environ(env, client, head.headers)
            self.client = (env["REMOTE_ADDR"], int(env.get("REMOTE_PORT") or 0)) if "REMOTE_ADDR" in env else None
        for name, value in head.headers:
            key = environ_key(name)
            if key is None:
                continue
            text = value.decode("latin-1")
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
            else:
                env[key] = text
        if self.body_done and not self.continue_due:
            # A chunked body gets no CONTENT_LENGTH (as from gunicorn): wsgi.input_terminated says to read to its end.
            data = b"".join(self.body)
            self.body = []
            env["wsgi.input"] = io.BytesIO(data)
        else:
            env["wsgi.input"] = Input(self)
        return env

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_written:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status_line is not None:
            raise RuntimeError("start_response was called twice without exc_info")
        self.framing = None
        code, line = http11.wsgi_status(status)
        try:
            encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        except (AttributeError, UnicodeEncodeError):
            raise ResponseError("WSGI header names and values must be str of latin-1 characters") from None
        self.status = code
        self.status_line = line
        self.headers_out = encoded
        return self.write

    def _framing(self, length: int | None = None) -> bytes:
        """Validate and encode the head (the core raises ResponseError for what HTTP cannot carry);
        `length` is the whole body's when the app returned it at once and named none."""
        if self.status_line is None:
            raise RuntimeError("the WSGI app wrote before calling start_response")
        headers = self.headers_out
        if length is not None and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers
        ):
            headers = [*headers, (b"Content-Length", b"%d" % length)]
        framing = ResponseHead(
            self.status,
            headers,
            request_method=self.head.method,
            request_version=self.head.version,
            keep_alive=self.keep_alive,
            extra=self.connection.site.default_headers(),
            status_line=self.status_line,
        )
        self.keep_alive = self.head_keep_alive = framing.keep_alive
        self.skip_body, self.chunked, self.expected = framing.skip_body, framing.chunked, framing.length
        self.framing = framing
        return framing.data

    def _send_whole(self, body: bytes) -> None:
        data = self._framing(len(body))
        if not self.skip_body:
            if self.chunked:
                data += http11.chunk(body) + LAST_CHUNK if body else LAST_CHUNK
            else:
                data += self._within_length(body)
        self._send(data, last=True)

    def write(self, body: bytes) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"a WSGI app must give bytes, not {type(body).__name__}")
        data = b"" if self.framing is not None else self._framing()
        if not self.skip_body and body:
            if self.chunked:
                data += http11.chunk(body)
            else:
                data += self._within_length(body)
        if data:
            self._send(data, last=False)

    def _finish(self) -> None:
        data = b"" if self.framing is not None else self._framing(0)
        if self.chunked and not self.skip_body:
            data += LAST_CHUNK
        elif not self.skip_body and self.expected >= 0 and self.sent < self.expected:
            raise RuntimeError(
                f"response body of {self.sent} bytes is shorter than its Content-Length of {self.expected}"
            )
        self._send(data, last=True)

    def _within_length(self, body: bytes) -> bytes:
        """What of `body` fits the Content-Length the app gave: the rest is dropped (with an error in
        the journal) and the connection closes after the response, as gunicorn does."""
        expected = self.expected
        if expected >= 0 and self.sent + len(body) > expected:
            if self.keep_alive or self.sent <= expected:
                logger.error(
                    "the app sent more than its Content-Length of %d for %s %s: cut there",
                    expected,
                    self.head.method,
                    self.head.target.decode("latin-1")[:200],
                )
            self.keep_alive = self.head_keep_alive = False  # cut: the connection must close after it
            body = body[: max(0, expected - self.sent)]
        self.sent += len(body)
        return body

    def _send(self, data: bytes, last: bool) -> None:
        if self.disconnected:
            raise ClientGone()
        self.head_written = True
        connection = self.connection
        with self.cond:
            self.queued += len(data)
        if connection.on_writable is None:
            connection.on_writable = self._writable
        connection.loop.call_soon_threadsafe(self._deliver, data, last)
        if not last and (self.queued > HIGH_WATER or connection.drained is not None):
            self._wait_writable()

    def _wait_writable(self) -> None:
        """Wait while the client lags; drop it if it takes nothing for the send timeout (2 s while
        other requests wait for a thread)."""
        connection = self.connection
        limit = self.pool.limits.send_timeout
        since = time.monotonic()
        with self.cond:
            self.writer_waiting = True
            try:
                while not self.disconnected and (self.queued > HIGH_WATER or connection.drained is not None):
                    self.cond.wait(WAIT_SLICE)
                    waited = time.monotonic() - since
                    if waited > limit or (waited > PRESSURE_SEND_TIMEOUT and self.pool.queued()):
                        self.disconnected = True
                        logger.info("dropping a client that read nothing of its response for %.1f s", waited)
                        connection.loop.call_soon_threadsafe(connection.transport.abort)
                        break
            finally:
                self.writer_waiting = False
        if self.disconnected:
            raise ClientGone()

    def read_body(self, size: int) -> bytes:
        """Up to `size` bytes of the body (-1: all of it), waiting for them to arrive; b"" at its end."""
        connection = self.connection
        if self.continue_due:
            self.continue_due = False
            if not self.head_written:
                connection.loop.call_soon_threadsafe(_write_continue, connection, self)
        with self.cond:
            while not self.disconnected and not self.body_done and (size < 0 or self.buffered < size):
                if not self.cond.wait(self.pool.limits.head_timeout):
                    break  # the loop's sweep ends a stalled body; this is only a backstop
            if self.disconnected and not (self.body_done and self.body):
                raise BodyError("the client closed the connection before its request body was read")
            data = b"".join(self.body)
            if 0 <= size < len(data):
                data, rest = data[:size], data[size:]
                self.body = [rest]
            else:
                self.body = []
            self.buffered -= len(data)
            resume = connection.reading_paused and self.buffered <= HIGH_WATER and not self.body_done
        if resume:
            connection.loop.call_soon_threadsafe(_resume, connection, self)
        return data


def _write_continue(connection: HttpConnection, exchange: WsgiExchange) -> None:
    if not exchange.disconnected and not exchange.head_written and not connection.transport.is_closing():
        connection.transport.write(CONTINUE)


def _resume(connection: HttpConnection, exchange: WsgiExchange) -> None:
    if connection.parsing is exchange and connection.current is exchange:
        connection.resume_reading()


class Input:
    """wsgi.input for a body still arriving: reads wait for the client's bytes."""

    def __init__(self, exchange: WsgiExchange) -> None:
        self._exchange = exchange
        self._line = b""  # read past the end of the last line returned

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None or size < 0 else size
        if self._line:
            if 0 <= size <= len(self._line):
                data, self._line = self._line[:size], self._line[size:]
                return data
            data, self._line = self._line, b""
            return data + self._exchange.read_body(size - len(data) if size >= 0 else -1)
        return self._exchange.read_body(size)

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None or size < 0 else size
        data = self._line
        while b"\n" not in data and (size < 0 or len(data) < size):
            more = self._exchange.read_body(8192)
            if not more:
                break
            data += more
        end = data.find(b"\n") + 1 or len(data)
        if 0 <= size < end:
            end = size
        line, self._line = data[:end], data[end:]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line
