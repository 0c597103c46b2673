"""The fault benchmark's clients, run inside the box by the bench's own Python; standalone (stdlib only).

    python faults_clients.py probe PORT PATH SECONDS      a new connection and one GET every 0.1 s
    python faults_clients.py hit PORT PATH COUNT EVERY [--hold SECONDS]
                                                          COUNT requests, one every EVERY s, each on a
                                                          new connection; --hold keeps them open
    python faults_clients.py flood PORT COUNT SECONDS     COUNT keep-alive connections, one request
                                                          each, then idle for SECONDS

Each prints one JSON line with what it saw. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import sys
import threading
import time
from typing import Any

PROBE_EVERY_S = 0.1
PROBE_TIMEOUT_S = 2.0
HIT_TIMEOUT_S = 2.0
BODY = b"hello, world\n"


def request(path: str, close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n" % (path.encode(), connection)


def get(port: int, path: str, timeout: float) -> tuple[bool, str]:
    """One GET on a new connection within timeout seconds: (200 with the body, what went wrong)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request(path))
            answer = b""
            while len(answer) < 65536:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, "timeout"
                conn.settimeout(left)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except socket.timeout:
        return False, "timeout"
    except OSError as exc:
        return False, type(exc).__name__
    if answer.startswith(b"HTTP/1.1 200") and answer.endswith(BODY):
        return True, ""
    return False, "bad answer" if answer else "closed"


def probe(port: int, path: str, seconds: float) -> dict[str, Any]:
    """A probe per tick, each in a thread of its own so a slow one does not delay the next tick."""
    ticks = int(seconds / PROBE_EVERY_S)
    results: list[tuple[bool, str, float]] = [(False, "not run", 0.0)] * ticks
    began = time.monotonic()

    def one(i: int) -> None:
        start = time.monotonic()
        ok, why = get(port, path, PROBE_TIMEOUT_S)
        results[i] = (ok, why, time.monotonic() - start)

    threads = []
    for i in range(ticks):
        _sleep_until(began + i * PROBE_EVERY_S)
        thread = threading.Thread(target=one, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=max(0.0, began + seconds + PROBE_TIMEOUT_S + 1 - time.monotonic()))
    return {
        "every_s": PROBE_EVERY_S,
        "timeout_s": PROBE_TIMEOUT_S,
        "ok": [r[0] for r in results],
        "why": [r[1] for r in results],
        "ms": [round(r[2] * 1000, 1) for r in results],
    }


def hit(port: int, path: str, count: int, every: float, hold: float) -> dict[str, Any]:
    """count requests on new connections; without hold each waits HIT_TIMEOUT_S at most for its end."""
    outcomes: dict[str, int] = {}
    held: list[socket.socket] = []
    lock = threading.Lock()
    began = time.monotonic()

    def one() -> None:
        if hold:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=HIT_TIMEOUT_S)
                conn.sendall(request(path))
                why = "sent"
                with lock:
                    held.append(conn)
            except OSError as exc:
                why = type(exc).__name__
        else:
            ok, why = get(port, path, HIT_TIMEOUT_S)
            why = "answered" if ok else why
        with lock:
            outcomes[why] = outcomes.get(why, 0) + 1

    threads = []
    for i in range(count):
        _sleep_until(began + i * every)
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=HIT_TIMEOUT_S + 1)
    if hold:
        _sleep_until(began + hold)
        for conn in held:
            conn.close()
    return {"count": count, "outcomes": outcomes}


def flood(port: int, count: int, seconds: float) -> dict[str, Any]:
    """count connections, each sends one complete keep-alive request, then all stay idle."""
    _raise_nofile(count + 64)
    began = time.monotonic()
    pending: dict[int, socket.socket] = {}
    poller = select.epoll()
    failed = 0
    for _ in range(count):
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setblocking(False)
        if conn.connect_ex(("127.0.0.1", port)) not in (0, 115):  # 115: EINPROGRESS
            failed += 1
            conn.close()
            continue
        pending[conn.fileno()] = conn
        poller.register(conn.fileno(), select.EPOLLOUT)
    sent: set[int] = set()
    answered: set[int] = set()
    closed = 0
    deadline = began + seconds
    while time.monotonic() < deadline:
        for fd, events in poller.poll(max(0.0, min(0.5, deadline - time.monotonic()))):
            conn = pending[fd]
            if fd not in sent and events & select.EPOLLOUT:
                try:
                    conn.send(request("/", close=False))
                    sent.add(fd)
                    poller.modify(fd, select.EPOLLIN)
                except OSError:
                    closed += _drop(poller, pending, fd)
                continue
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if data:
                answered.add(fd)
            else:
                closed += _drop(poller, pending, fd)
    for conn in pending.values():
        conn.close()
    return {
        "count": count,
        "connect_failed": failed,
        "sent": len(sent),
        "answered": len(answered),
        "closed_by_server": closed,
        "open_at_end": len(pending),
        "seconds": round(time.monotonic() - began, 1),
    }


def _drop(poller: select.epoll, pending: dict[int, socket.socket], fd: int) -> int:
    poller.unregister(fd)
    pending.pop(fd).close()
    return 1


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


def main(argv: list[str]) -> int:
    mode, port = argv[0], int(argv[1])
    if mode == "probe":
        result = probe(port, argv[2], float(argv[3]))
    elif mode == "hit":
        hold = float(argv[argv.index("--hold") + 1]) if "--hold" in argv else 0.0
        result = hit(port, argv[2], int(argv[3]), float(argv[4]), hold)
    elif mode == "flood":
        result = flood(port, int(argv[2]), float(argv[3]))
    else:
        sys.stderr.write(f"unknown mode {mode!r}\n")
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
