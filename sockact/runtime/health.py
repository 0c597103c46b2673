"""The health endpoint (--health-listen): GET /ready and /live on a socket of their own, from a thread of their own.

A load balancer or an orchestrator asks two questions. /ready: should new work come to this host? All
the app's workers share the health socket, so whichever worker takes the probe answers for the host:
200 when it is ready itself (the app's startup completed, READY=1 was sent, and it is not leaving:
SIGTERM, recycling), or when another worker of the app is (the /dev/shm scoreboard,
balance.others_serving). So a rolling reload, one worker at a time, never turns /ready 503, and a
stop of the whole app does at once. Without the scoreboard (no sockact unit, /dev/shm full) a worker
answers for itself alone. /live: is the worker serving at all? 503 once the serving loop has not beaten for as long
as the watchdog side judges a loop blocked (sockact.runtime.stuck.loop_limit), or while every WSGI
thread is stuck past --request-timeout (stuck.Verdict.all_stuck, the verdict that stops WATCHDOG=1).

The answers come from a plain thread with blocking sockets and a selector, never from the app's event
loop: a loop blocked by the app cannot answer, so it could not say it is blocked. The loop only
publishes timestamps here (`State.beat`); a stale beat is the verdict.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import Callable

logger = logging.getLogger("sockact.runtime")

READ_MOST = 4096  # a probe's request head is a few dozen bytes: anything longer is cut off
READ_TIMEOUT = 1.0  # a peer that sends no whole head within this is closed, so it cannot tie the thread up
HOLD_MOST = 64  # connections waiting for their head at once; older ones are closed first past it
PATHS = ("/ready", "/live")


class State:
    """What the serving loop publishes and the health thread reads (plain attributes: each has one writer)."""

    def __init__(self, blocked_after: float) -> None:
        self.blocked_after = blocked_after  # seconds without a beat that make the loop blocked
        self.ready = False  # READY=1 was sent
        self.leaving = False  # SIGTERM or recycling: /ready answers 503 from now on
        self.last_beat: float | None = None  # monotonic time of the serving loop's last tick
        self.threads_stuck = False  # every WSGI thread stuck past --request-timeout
        # Whether another worker of the app serves (balance.others_serving); None without the scoreboard.
        self.others: Callable[[], bool] | None = None

    def beat(self, threads_stuck: bool = False) -> None:
        """From the serving loop's tick (and its drain), about every 0.1 s."""
        self.last_beat = time.monotonic()
        self.threads_stuck = threads_stuck

    def is_ready(self) -> bool:
        """This worker itself: started, not leaving, live."""
        return self.ready and not self.leaving and self.is_live()

    def others_serve(self) -> bool:
        others = self.others
        return others is not None and others()

    def is_live(self, now: float | None = None) -> bool:
        """Before the loop's first beat (import, lifespan startup) the worker counts as live: the start
        timeout judges a startup that hangs, as systemd's TimeoutStartSec= does."""
        if self.last_beat is None:
            return True
        now = time.monotonic() if now is None else now
        return now - self.last_beat < self.blocked_after and not self.threads_stuck


def _response(status: str, body: bytes, head_only: bool, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if head_only else body)


def answer(state: State, head: bytes) -> bytes:
    """The response to one request head (bytes up to the blank line, or what arrived of it)."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _response("400 Bad Request", b"bad request\n", False)
    method, target = parts[0], parts[1].split(b"?", 1)[0].decode("ascii", "replace")
    head_only = method == b"HEAD"
    if target not in PATHS:
        return _response("404 Not Found", b"not found: try /ready or /live\n", head_only)
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", b"method not allowed\n", False, "Allow: GET, HEAD\r\n")
    if target == "/live":
        ok, why = state.is_live(), "stuck"
    else:
        ok, why = state.is_ready(), "leaving" if state.leaving else "starting" if not state.ready else "stuck"
        if not ok and state.others_serve():  # the host serves on without this worker: say so for it
            return _response("200 OK", f"ready: this worker is {why}, another serves\n".encode(), head_only)
    if ok:
        return _response("200 OK", target[1:].encode() + b"\n", head_only)
    return _response("503 Service Unavailable", why.encode() + b"\n", head_only)


class _Pending:
    __slots__ = ("data", "deadline")

    def __init__(self, deadline: float) -> None:
        self.data = b""
        self.deadline = deadline


class Endpoint:
    """Accepts on the health sockets and answers each connection once, then closes it."""

    def __init__(self, sockets: list[socket.socket], state: State) -> None:
        self.sockets = sockets
        self.state = state
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, _Pending] = {}
        self._thread = threading.Thread(target=self._run, name="sockact-health", daemon=True)

    def start(self) -> None:
        for sock in self.sockets:
            sock.setblocking(False)  # shared with sibling workers: whoever wakes first takes the probe
            self.selector.register(sock, selectors.EVENT_READ, "listener")
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._once()
            except Exception:  # a dead endpoint would leave probes hanging in the backlog: log, go on
                logger.exception("the health endpoint failed to answer; it goes on")
                time.sleep(0.1)

    def _once(self) -> None:
        for key, _ in self.selector.select(timeout=0.25):
            if key.data == "listener":
                self._accept(key.fileobj)  # type: ignore[arg-type]
            else:
                self._read(key.fileobj)  # type: ignore[arg-type]
        self._expire(time.monotonic())

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # a sibling took it (EAGAIN), or EMFILE: the probe waits in the backlog
            return
        conn.setblocking(False)
        if len(self.pending) >= HOLD_MOST:
            self._close(min(self.pending, key=lambda held: self.pending[held].deadline))
        self.pending[conn] = _Pending(time.monotonic() + READ_TIMEOUT)
        self.selector.register(conn, selectors.EVENT_READ, "connection")

    def _read(self, conn: socket.socket) -> None:
        held = self.pending[conn]
        try:
            chunk = conn.recv(READ_MOST - len(held.data))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        held.data += chunk
        if b"\r\n\r\n" in held.data or b"\n\n" in held.data or len(held.data) >= READ_MOST:
            with contextlib.suppress(OSError):
                conn.send(answer(self.state, held.data))  # under 300 bytes: fits a fresh socket's buffer
            self._close(conn)

    def _expire(self, now: float) -> None:
        for conn in [conn for conn, held in self.pending.items() if held.deadline <= now]:
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        self.pending.pop(conn, None)
        self.selector.unregister(conn)
        conn.close()
