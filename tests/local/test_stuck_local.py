"""The request timeout without systemd: stuck WSGI threads stop the watchdog pings, a blocked ASGI loop is named."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import free_listener
from test_runtime_local import get, spawn_with_fd

HANG = b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n"


class NotifyLog:
    """Every sd_notify datagram the worker sends, with the time it arrived, read by a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = str(path)
        self.seen: list[tuple[float, str]] = []
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self.closed:
            try:
                self.seen.append((time.monotonic(), self.sock.recv(4096).decode()))
            except (TimeoutError, OSError):
                continue

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = 20) -> float:
        """The arrival time of the first message since now that satisfies `wanted`."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, message in self.seen[start:]:
                if wanted(message):
                    return when
            time.sleep(0.02)
        raise AssertionError(f"no such notification in {timeout} s; last ones: {self.seen[-5:]}")

    def pings_between(self, begin: float, end: float) -> int:
        return sum(1 for when, message in self.seen if begin <= when <= end and "WATCHDOG=1" in message)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyLog]:
    log = NotifyLog(tmp_path / "notify")
    yield log
    log.close()


def hang(port: int) -> socket.socket:
    """A request that never gets its answer; the socket stays open so the server sees no hang-up."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HANG)
    return sock


def stopped(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=10)
    return err


def test_wsgi_pings_stop_only_once_every_thread_is_stuck(notify: NotifyLog) -> None:
    listener = free_listener()
    port = listener.getsockname()[1]
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}  # a ping every 0.1 s
    proc = spawn_with_fd(
        listener,
        [sys.executable, "-m", "sockact", "run", "wsgi_hang:app", "--threads", "2", "--request-timeout", "1"],
        env=env,
    )
    held = []
    try:
        notify.wait_for(lambda m: "READY=1" in m)
        first = time.monotonic()
        held.append(hang(port))
        partly = notify.wait_for(lambda m: "; 1 of 2 threads stuck for" in m) - first
        assert get(port, "/")[0] == 200  # the other thread serves
        notify.wait_for(lambda m: "WATCHDOG=1" in m, timeout=1)  # and the pings go on
        second = time.monotonic()
        held.append(hang(port))
        whole = notify.wait_for(lambda m: "; 2 of 2 threads stuck for" in m)
        time.sleep(1.5)  # a window to count pings in, not a wait for an event
        pings = notify.pings_between(whole, whole + 1.5)
        print(
            f"\n--request-timeout 1: STATUS= said 1 of 2 stuck {partly:.2f} s after the first hang, "
            f"2 of 2 {whole - second:.2f} s after the second; WATCHDOG=1 in the 1.5 s after that: {pings}"
        )
        assert pings == 0
    finally:
        err = stopped(proc)
        for sock in held:
            sock.close()
    lines = [line for line in err.splitlines() if "request GET /hang has run for" in line]
    assert len(lines) == 2, err  # one line per stuck request, not one per tick
    assert "wsgi_hang.py" in lines[0] and "in app" in lines[0]
    assert "all 2 threads are stuck" in err


def test_asgi_blocked_loop_is_named_but_a_long_await_is_not(notify: NotifyLog) -> None:
    listener = free_listener()
    port = listener.getsockname()[1]
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}  # the watch reports after 1 s
    proc = spawn_with_fd(listener, [sys.executable, "-m", "sockact", "run", "blocker:app"], env=env)
    try:
        notify.wait_for(lambda m: "READY=1" in m)
        began = time.monotonic()
        assert get(port, "/wait?s=2.5")[0] == 200  # long polling: the loop turns all along
        assert notify.pings_between(began, time.monotonic()) >= 4
        assert not any("blocked" in message for _, message in notify.seen)
        blocker = threading.Thread(target=get, args=(port, "/block?s=3"))
        blocker.start()
        notify.wait_for(lambda m: "; event loop blocked for 1 s;" in m, timeout=10)
        blocker.join(10)
    finally:
        err = stopped(proc)
    lines = [line for line in err.splitlines() if "the event loop has been blocked" in line]
    assert len(lines) == 1, err
    assert "by GET /block, at " in lines[0] and "blocker.py" in lines[0]
