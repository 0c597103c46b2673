"""sockact's own WSGI engine: a pool of threads sharing one epoll set, each serving what it wakes for.

waitress (the other WSGI engine) reads and parses in one thread and runs the app in another, so
every request crosses threads twice and its loop visits every connection on every turn. Here the
thread that wakes for a socket does all of it: accept, read, parse (httptools, in C), run the app,
write. Every socket is armed EPOLLONESHOT, so exactly one thread owns a connection while it works on
it; an idle keep-alive connection costs no thread, only its place in the epoll set. A slow client
costs no thread either while it sends its request: the connection keeps its parser between reads.

The main thread runs the tick: WATCHDOG=1, STATUS=, the scoreboard, idle keep-alive timeouts and,
after SIGTERM, the drain. It also watches the app calls (stuck.Calls): while every thread has been in
one for longer than the request timeout, the worker serves nothing, so the tick sends no WATCHDOG=1
and systemd restarts the worker; its siblings serve meanwhile.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any

import httptools

from . import limits
from .balance import PAUSED_LOOK, AcceptGate, Scoreboard, for_this_worker
from .notify import Notifier
from .pulse import IDLE_GRACE, Pulse, drain_budget
from .recycle import Recycler
from .stuck import DEFAULT_REQUEST_TIMEOUT, Calls

if TYPE_CHECKING:
    from .forwarded import ProxyTrust

logger = logging.getLogger("sockact.runtime")
access = logging.getLogger("sockact.access")

TICK = 0.1  # the main thread's beat; worker threads wake at least this often to see a stop
KEEPALIVE_TIMEOUT = 5.0  # a connection that sends nothing for this long is closed (uvicorn's keep-alive default)
REQUEST_TIMEOUT = 60.0  # a request still arriving after this long is dropped (a slow-trickle client)
SEND_TIMEOUT = 60.0  # a client that reads nothing for this long while a response is written is dropped
MAX_HEAD = 64 * 1024  # request line and headers
MAX_BODY_IN_MEMORY = 1024 * 1024  # larger request bodies go to a temporary file
RECV = 65536
ONESHOT = select.EPOLLIN | select.EPOLLONESHOT | select.EPOLLRDHUP
NO_BODY_STATUS = (204, 304)


class ClientGone(Exception):
    """Writing failed: the client closed, reset, or stopped reading. Not an OSError, so the app's own
    OSErrors still count as the app's errors."""


class Request:
    """One parsed request, filled by httptools' callbacks."""

    __slots__ = ("body", "body_size", "head_done", "headers", "keep_alive", "method", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] | IO[bytes] = []
        self.body_size = 0
        self.method = "GET"
        self.version = "1.1"
        self.keep_alive = True
        self.head_done = False


class Connection:
    """A client connection and its parser; owned by one thread at a time (EPOLLONESHOT, `busy`)."""

    def __init__(self, sock: socket.socket, peer: Any, listener: Listener) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.listener = listener
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        self.complete: deque[Request] = deque()
        self.head_bytes = 0
        self.continue_due = False  # the request being received asked for 100 Continue
        self.began = 0.0  # when the request being received started arriving
        self.busy = False
        self.closed = False
        self.idle_since = time.monotonic()

    # httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = Request()
        self.head_bytes = 0
        self.began = time.monotonic()

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        if b"_" in name:
            # X_Forwarded_For would become HTTP_X_FORWARDED_FOR beside the proxy's own header: dropped,
            # as gunicorn and waitress do.
            return
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        request.head_done = True
        size = len(request.url) + sum(len(name) + len(value) + 4 for name, value in request.headers)
        self.head_bytes = max(self.head_bytes, size)
        assert self.parser is not None
        request.method = self.parser.get_method().decode("ascii")
        request.version = self.parser.get_http_version()
        if request.version == "1.1":
            for name, value in request.headers:
                if name.lower() == b"expect" and value.lower() == b"100-continue":
                    self.continue_due = True  # sent once the responses before it are out (Engine.serve)

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request.body_size += len(body)
        if isinstance(request.body, list):
            request.body.append(body)
            if request.body_size > MAX_BODY_IN_MEMORY:
                spool = tempfile.TemporaryFile()  # noqa: SIM115 - it lives as long as the request
                spool.write(b"".join(request.body))
                request.body = spool
        else:
            request.body.write(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        assert self.parser is not None
        request.keep_alive = self.parser.should_keep_alive()
        self.complete.append(request)
        self.current = None
        self.continue_due = False  # the body came without waiting for it

    def discard(self) -> None:
        """Close request bodies spooled to files; break the parser's cycle back to us."""
        for request in (self.current, *self.complete):
            if request is not None and not isinstance(request.body, list):
                request.body.close()
        self.current = None
        self.complete.clear()
        self.parser = None

    # I/O ------------------------------------------------------------------------------------------
    def send_all(self, data: bytes) -> None:
        """Write all of data: one send() when the socket takes it, else wait for room, up to SEND_TIMEOUT."""
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ClientGone(exc.strerror or str(exc)) from None
            view = view[sent:]
            if view:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                if not poller.poll(SEND_TIMEOUT * 1000):
                    raise ClientGone("the client did not read the response")


class Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.unix = sock.family == socket.AF_UNIX
        name = sock.getsockname()
        if self.unix:
            self.server_name, self.server_port = "localhost", "0"
        else:
            self.server_name, self.server_port = str(name[0]), str(name[1])


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii"))
    return _date_cache[1]


_header_keys: dict[bytes, str] = {}


def environ_key(name: bytes) -> str:
    key = _header_keys.get(name)
    if key is None:
        text = name.decode("latin-1").upper().replace("-", "_")
        key = text if text in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + text
        if len(_header_keys) < 1000:  # header names are few; a client sending many cannot grow this forever
            _header_keys[name] = key
    return key


class Response:
    """start_response() and write() for one request; the head goes out with the first body bytes."""

    __slots__ = (
        "chunked",
        "close",
        "conn",
        "head_sent",
        "headers",
        "length",
        "no_body",
        "request",
        "sent",
        "status",
    )

    def __init__(self, conn: Connection, request: Request, close: bool) -> None:
        self.conn = conn
        self.request = request
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.chunked = False
        self.close = close
        self.length: int | None = None
        self.sent = 0
        self.no_body = request.method == "HEAD"

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response() called a second time without exc_info")
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError(f"invalid WSGI status {status!r}: it must look like '200 OK'")
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str) or "\n" in value or "\r" in value:
                raise ValueError(f"invalid WSGI response header {(name, value)!r}")
        self.status = status
        self.headers = list(headers)
        return self.write

    def head(self, body_length: int | None) -> bytes:
        """The status line and headers; decides the framing (Content-Length, chunked, or close)."""
        code = int(self.status[:3])
        version = self.request.version
        lines = [f"HTTP/1.1 {self.status}\r\n"]
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length":
                self.length = int(value)
                continue  # written below, once
            if lower == "connection":
                if value.lower() == "close":
                    self.close = True
                continue  # we write our own, matching what we do
            elif lower == "transfer-encoding":
                continue  # the framing is ours to choose
            lines.append(f"{name}: {value}\r\n")
        if code < 200 or code in NO_BODY_STATUS:
            self.no_body = True
        elif self.length is not None:
            lines.append(f"Content-Length: {self.length}\r\n")
        elif body_length is not None:
            self.length = body_length
            lines.append(f"Content-Length: {body_length}\r\n")
        elif version == "1.1":
            self.chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            self.close = True  # HTTP/1.0 without a length: the end of the body is the end of the connection
        if self.close:
            if version == "1.1":
                lines.append("Connection: close\r\n")
        elif version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        return "".join(lines).encode("latin-1") + http_date() + b"\r\n"

    def write(self, data: bytes) -> None:
        if not self.status:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"the app gave {type(data).__name__}, not bytes, as part of its response body")
        out = b"" if self.head_sent else self.head(None)
        self.head_sent = True
        data = self.within_length(data)
        if data and not self.no_body:
            self.sent += len(data)
            if self.chunked:
                out += b"%x\r\n%s\r\n" % (len(data), data)
            else:
                out += data
        if out:
            self.conn.send_all(out)

    def within_length(self, data: bytes) -> bytes:
        """Never more than the announced Content-Length: the excess would corrupt the next response."""
        if self.length is not None and self.sent + len(data) > self.length:
            if not self.close:
                logger.error("the app sent more than its Content-Length of %d; the excess was dropped", self.length)
            self.close = True
            return data[:max(0, self.length - self.sent)]
        return data

    def finish(self) -> None:
        if not self.head_sent:
            self.write(b"")
        if self.chunked and not self.no_body:
            self.conn.send_all(b"0\r\n\r\n")
        if self.length is not None and self.sent < self.length and not self.no_body:
            self.close = True  # the app sent less than it announced: the client cannot reuse this connection


class Engine:
    def __init__(self, app: Callable[..., Iterable[bytes]], sockets: list[socket.socket], *, threads: int,
                 stop_timeout: float, notifier: Notifier, access_log: bool = False,
                 recycler: Recycler | None = None, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.app = app
        self.threads = max(1, threads)
        self.calls = Calls(self.threads, request_timeout)
        self.saturated = False  # every thread busy in a long app call: this worker cannot accept
        self.stop_timeout = stop_timeout
        self.access_log = access_log
        self.forwarded: ProxyTrust | None = None  # --forwarded-allow-ips; None: nothing runs per request
        self.board: Scoreboard | None = for_this_worker()
        self.pulse = Pulse(notifier, self.board, recycler)
        self.epoll = select.epoll()
        self.lock = threading.Lock()
        self.listeners = {}
        for sock in sockets:
            sock.setblocking(False)
            listener = Listener(sock)
            self.listeners[listener.fd] = listener
        self.conns: dict[int, Connection] = {}
        self.listening = False
        self.paused = False
        self.gate = AcceptGate(self.board)
        # Stop accepting at `ceiling` open connections, well before the descriptor limit (limits.py).
        self.ceiling = limits.connection_ceiling()
        self.full = False
        self.should_exit = False
        self.draining = False
        self.stopped = False
        self._served = itertools.count(1)
        self.served = 0
        self.base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "SCRIPT_NAME": "",
            # wsgi.input ends where the body does (chunked bodies included): apps may read to EOF.
            "wsgi.input_terminated": True,
        }

    # accepting ------------------------------------------------------------------------------------
    def listen(self, on: bool) -> None:
        """Arm (or disarm) the listening sockets; caller holds the lock."""
        if on == self.listening:
            return
        for fd in self.listeners:
            if on:
                self.epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)
            else:
                self.epoll.unregister(fd)
        self.listening = on

    def accept(self, listener: Listener) -> Connection | None:
        try:
            sock, peer = listener.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            sock = None
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the backlog keeps the client; try again on the tick
            logger.warning("accept failed: %s", exc.strerror or exc)
            with self.lock:
                self.paused = True  # the tick accepts again
                if self.board is not None:
                    self.board.accepting(False)
                self.listen(False)
            return None
        with self.lock:
            if self.listening:
                self.epoll.modify(listener.fd, select.EPOLLIN | select.EPOLLONESHOT)
            if sock is None:
                return None
            sock.setblocking(False)
            conn = Connection(sock, peer, listener)
            conn.busy = True
            self.conns[conn.fd] = conn
            # Disarmed until this thread is done with it: EPOLLONESHOT, because even a mask of 0 would
            # keep reporting a hang-up to every other thread meanwhile.
            self.epoll.register(conn.fd, select.EPOLLONESHOT)
            self.publish()
        return conn

    def publish(self) -> None:
        """Caller holds the lock."""
        if len(self.conns) >= self.ceiling and not self.full:
            self.full = self.paused = True
            logger.warning("%d connections open, near the file descriptor limit: not accepting until some close "
                           "(new ones wait in the listen backlog)", len(self.conns))
            if self.board is not None:
                self.board.accepting(False)
            self.listen(False)
        board = self.board
        if board is None:
            return
        board.publish(len(self.conns))
        if not self.paused and self.gate.near() and self.gate.ahead():
            self.paused = True
            self.listen(False)

    def reconsider(self) -> None:
        """On the tick: look at the siblings again (they come, go and change their counts)."""
        with self.lock:
            if not self.saturated:  # else the siblings must go on seeing this worker as not accepting
                self.resume_if_caught_up()

    def mark_saturated(self, now: float) -> None:
        """On the tick: while every thread is held by a long app call, nothing here accepts, so the
        siblings are told this worker does not, and none of them stops accepting in its favour."""
        saturated = self.calls.saturated(now)
        with self.lock:
            if self.board is not None:
                if saturated:
                    self.board.accepting(False)
                elif self.saturated:
                    self.board.accepting(not self.paused)
            self.saturated = saturated

    def resume_if_caught_up(self) -> None:
        """Accept again once no longer ahead; caller holds the lock."""
        if self.full:
            if len(self.conns) >= limits.resume_below(self.ceiling):
                return
            self.full = False
            logger.info("%d connections open: accepting again", len(self.conns))
        if self.gate.caught_up() and self.paused:
            self.paused = False
            if not self.draining:
                self.listen(True)

    # serving --------------------------------------------------------------------------------------
    def worker(self) -> None:
        poll = self.epoll.poll
        while not self.stopped:
            try:
                events = poll(TICK, 1)
            except InterruptedError:
                continue
            for fd, _mask in events:
                listener = self.listeners.get(fd)
                if listener is not None:
                    conn = self.accept(listener)
                    if conn is None:
                        continue
                else:
                    with self.lock:
                        conn = self.conns.get(fd)
                        if conn is None or conn.busy or conn.closed:
                            continue  # an event for a connection closed meanwhile, or owned already
                        conn.busy = True
                keep = False
                try:
                    keep = self.serve(conn)
                except BaseException:  # a bug must cost one connection, never the thread
                    logger.exception("unexpected error serving a connection")
                finally:
                    self.release(conn, keep)

    def release(self, conn: Connection, keep: bool) -> None:
        with self.lock:
            conn.busy = False
            if keep and not conn.closed:
                conn.idle_since = time.monotonic()
                self.epoll.modify(conn.fd, ONESHOT)
                return
            self.close(conn)

    def close(self, conn: Connection) -> None:
        """Caller holds the lock."""
        if conn.closed:
            return
        conn.closed = True
        conn.discard()
        self.conns.pop(conn.fd, None)
        try:
            self.epoll.unregister(conn.fd)
        except OSError:
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        if self.board is not None:
            self.board.publish(len(self.conns))
            if self.paused:
                self.resume_if_caught_up()

    def serve(self, conn: Connection) -> bool:
        """Read what the client sent and answer every complete request; False closes the connection."""
        try:
            data = conn.sock.recv(RECV)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        keep = True
        assert conn.parser is not None
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            keep = False  # WSGI has no upgrades: what was asked is answered, then the connection closes
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, OSError):  # from our callbacks: spooling the body failed
                logger.error("cannot store a request body: %s", exc.__context__)
                self.error(conn, 500, "the request body could not be stored")
                return False
            if not conn.complete:
                self.error(conn, 400, f"malformed request: {exc}")
                return False
            keep = False  # answer the requests that came before the garbage, then close
        current = conn.current
        if current is not None and not current.head_done:
            conn.head_bytes += len(data)  # a head still arriving: what came so far
        if conn.head_bytes > MAX_HEAD:
            self.error(conn, 431, f"the request line and headers exceed {MAX_HEAD // 1024} KiB")
            return False
        while conn.complete:
            request = conn.complete.popleft()
            if not self.respond(conn, request, must_close=not keep and not conn.complete):
                return False
        if conn.continue_due and keep:
            conn.continue_due = False
            try:
                conn.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            except ClientGone:
                return False
        return keep

    def error(self, conn: Connection, code: int, why: str) -> None:
        phrase = HTTPStatus(code).phrase
        body = f"{phrase}: {why}\n".encode()
        head = (f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
        try:
            conn.send_all(head + http_date() + b"\r\n" + body)
            # Closing with unread bytes queued sends a reset, which can destroy this answer on its
            # way: end our side first and throw away what the client already sent.
            conn.sock.shutdown(socket.SHUT_WR)
            for _ in range(16):
                if not conn.sock.recv(RECV):
                    break
        except (ClientGone, OSError):
            pass

    def environ(self, conn: Connection, request: Request) -> dict[str, Any]:
        env = dict(self.base_environ)
        raw_path, _, query = request.url.partition(b"?")
        path, _, _fragment = raw_path.partition(b"#")
        if path.startswith((b"http://", b"https://")):  # absolute form: keep the path only
            path = b"/" + path.split(b"/", 3)[-1] if path.count(b"/") >= 3 else b"/"
        env["REQUEST_METHOD"] = request.method
        env["PATH_INFO"] = _unquote(path).decode("latin-1")
        env["QUERY_STRING"] = query.partition(b"#")[0].decode("latin-1")
        env["RAW_URI"] = env["REQUEST_URI"] = request.url.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/" + request.version
        listener = conn.listener
        env["SERVER_NAME"] = listener.server_name
        env["SERVER_PORT"] = listener.server_port
        if not listener.unix and conn.peer:
            env["REMOTE_ADDR"] = str(conn.peer[0])
            env["REMOTE_PORT"] = str(conn.peer[1])
        if self.forwarded is not None:  # hook: --forwarded-allow-ips (forwarded.py) decides client and scheme
            self.forwarded.apply_to_environ(env, None if listener.unix else conn.peer, request.headers)
        for name, value in request.headers:
            key = environ_key(name)
            text = value.decode("latin-1")
            if key in env and key.startswith("HTTP_"):
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
            else:
                env[key] = text
        body = request.body
        if isinstance(body, list):
            env["wsgi.input"] = io.BytesIO(b"".join(body))
        else:
            body.seek(0)
            env["wsgi.input"] = body
        if "CONTENT_LENGTH" not in env and request.body_size:
            env["CONTENT_LENGTH"] = str(request.body_size)  # a chunked body, decoded
        return env

    def respond(self, conn: Connection, request: Request, must_close: bool = False) -> bool:
        """Run the app for one request and write its response; False when the connection must close."""
        env = self.environ(conn, request)
        self.served = next(self._served)
        recycler = self.pulse.recycler
        if recycler is not None and recycler.served(self.served):
            self.stop_taking_work()
        close = must_close or not request.keep_alive or self.draining or self.rebalance()
        response = Response(conn, request, close)
        result: Iterable[bytes] | None = None
        self.calls.begin(request.method, env["PATH_INFO"])
        try:
            result = self.app(env, response.start_response)
            if isinstance(result, (list, tuple)) and not response.head_sent and response.status:
                body = b"".join(result)
                out = response.head(len(body))
                response.head_sent = True
                body = response.within_length(body)
                response.sent = len(body)
                conn.send_all(out if response.no_body else out + body)
            else:
                for chunk in result:
                    if chunk:
                        response.write(chunk)
            response.finish()
        except ClientGone:
            return False  # the client went away or stopped reading
        except BaseException:  # the app's error (SystemExit too): a 500 when nothing was sent yet, else a cut
            logger.exception("error in the app serving %s %s", request.method, env.get("PATH_INFO", ""))
            if not response.head_sent:
                self.error(conn, 500, "the application raised an error")
            return False
        finally:
            self.calls.end()
            close_result = getattr(result, "close", None)
            if close_result is not None:
                try:
                    close_result()
                except Exception:
                    logger.exception("error closing the app's response")
            if not isinstance(request.body, list):
                request.body.close()
        if self.access_log:
            access.info('%s - "%s %s HTTP/%s" %s', env.get("REMOTE_ADDR", "-"), request.method,
                        env["RAW_URI"], request.version, response.status[:3])
        return not response.close

    def rebalance(self) -> bool:
        """True when this connection should move to a less busy sibling (answered with Connection: close)."""
        board = self.board
        if board is not None and board.rebalance_due:
            board.rebalance_due -= 1
            return True
        return False

    def stop_taking_work(self) -> None:
        """A request reached --max-requests: accept nothing more and answer from now on with
        Connection: close, as drain() begins; the main thread drains on its tick."""
        with self.lock:
            self.draining = True
            self.listen(False)
        self.should_exit = True

    # the main thread --------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(1 for conn in list(self.conns.values()) if conn.busy)

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        with self.lock:
            self.listen(True)
        workers = [threading.Thread(target=self.worker, name=f"sockact-http-{i}", daemon=True)
                   for i in range(self.threads)]
        for thread in workers:
            thread.start()
        self.pulse.ready()
        logger.info("ready: serving %d socket(s) with %d threads (WSGI)", len(self.listeners), self.threads)
        next_sweep = time.monotonic() + 1.0
        while not self.should_exit:
            beat = time.monotonic() + TICK
            while self.paused and not self.should_exit and time.monotonic() < beat - PAUSED_LOOK:
                time.sleep(PAUSED_LOOK)
                self.reconsider()
            time.sleep(max(0.0, beat - time.monotonic()))
            now = time.monotonic()
            verdict = self.calls.check(now)
            if self.pulse.tick(self.served, self.in_flight(), len(self.conns), healthy=not verdict.all_stuck,
                               stuck=verdict.text):
                self.should_exit = True  # recycling: the drain SIGTERM starts
            self.reconsider()
            self.mark_saturated(now)
            if now >= next_sweep:
                next_sweep = now + 1.0
                self.close_idle(now - KEEPALIVE_TIMEOUT, begun_before=now - REQUEST_TIMEOUT)
        self.drain()
        self.stopped = True  # threads still running the app past the deadline are daemons: they end with us

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.should_exit = True

    def close_idle(self, before: float, begun_before: float = -math.inf, between_requests: bool = False) -> None:
        """Close connections no thread is serving that sent nothing since `before`, whose request
        began before `begun_before`, or (between_requests) that wait between requests."""
        with self.lock:
            for conn in list(self.conns.values()):
                if conn.busy:
                    continue
                partial = conn.current is not None
                if (conn.idle_since < before or (partial and conn.began < begun_before)
                        or (between_requests and not partial)):
                    self.close(conn)

    def drain(self) -> None:
        started = time.monotonic()
        with self.lock:
            self.draining = True
            self.listen(False)
        self.pulse.stopping(self.in_flight())
        with self.lock:
            self.board = None
        deadline = started + drain_budget(self.stop_timeout)
        while self.conns and time.monotonic() < deadline:
            now = time.monotonic()
            if now - started >= IDLE_GRACE:
                # A request already on the wire got IDLE_GRACE to arrive, and is answered with close;
                # one still arriving may go on while its bytes keep coming.
                self.close_idle(now - IDLE_GRACE, between_requests=True)
            time.sleep(TICK / 2)
        left = self.in_flight()
        if left:
            logger.error("drain deadline reached with %d request(s) in flight; closing them", left)


def _unquote(path: bytes) -> bytes:
    if b"%" not in path:
        return path
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path)


def run(app: Any, sockets: list[socket.socket], *, threads: int, stop_timeout: float, notifier: Notifier,
        access_log: bool = False, recycler: Recycler | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT, forwarded: ProxyTrust | None = None) -> None:
    engine = Engine(app, sockets, threads=threads, stop_timeout=stop_timeout, notifier=notifier,
                    access_log=access_log, recycler=recycler, request_timeout=request_timeout)
    engine.forwarded = forwarded
    engine.serve_forever()

