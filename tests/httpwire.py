"""Real `sockact run` servers for the HTTP wire tests, raw-socket clients, a small response parser, and
the records the app in tests/apps/http_record.py writes of every request it saw."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().parent / "apps"
INTERFACES = ("asgi", "wsgi")
APP_FOR = {"asgi": ("http_record:asgi_app", "asgi3"), "wsgi": ("http_record:wsgi_app", "wsgi")}


@dataclass
class Server:
    """One `sockact run` subprocess on 127.0.0.1:port, with its record file and private TMPDIR."""

    interface: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def record_file(self) -> Path:
        return self.workdir / "record.jsonl"

    @property
    def tmpdir(self) -> Path:
        return self.workdir / "tmp"

    @property
    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def mark(self) -> int:
        """Where the record file ends now: records(since=mark) leaves out every older line, whose client
        port may since have been reused."""
        try:
            return self.record_file.stat().st_size
        except FileNotFoundError:
            return 0

    def records(self, port: int | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Every line the app wrote (after byte offset since), or only those from this client port."""
        try:
            with open(self.record_file, "rb") as file:
                file.seek(since)
                lines = file.read().decode("utf-8").splitlines()
        except FileNotFoundError:
            return []
        parsed = [json.loads(line) for line in lines if line.strip()]
        return [line for line in parsed if port is None or line.get("port") == port]

    def heads(self, port: int) -> list[dict[str, Any]]:
        return [line for line in self.records(port) if line["event"] == "head"]

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def barrier(self) -> None:
        """One request answered on a new connection: on the ASGI engine's single loop every app call
        scheduled before it has started (and written its head record) by then."""
        with self.connect() as sock:
            sock.sendall(b"GET /__barrier HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            read_until_close(sock, 5.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(interface: str, *extra: str, app: str | None = None) -> Iterator[Server]:
    """`sockact run` of the recording app on a free port; waits until it answers, stops it after."""
    reference, kind = APP_FOR[interface]
    workdir = Path(tempfile.mkdtemp(prefix=f"sockact-wire-{interface}-"))
    (workdir / "tmp").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "SOCKACT_TEST_RECORD": str(workdir / "record.jsonl"),
        "TMPDIR": str(workdir / "tmp"),
    }
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"):
        env.pop(name, None)
    threads = ("--threads", "2") if interface == "wsgi" else ()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sockact",
        "run",
        app or reference,
        "--bind",
        f"127.0.0.1:{port}",
        "--interface",
        kind,
        "--log-level",
        "warning",
        *threads,
        *extra,
    ]
    with open(workdir / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(interface, port, proc, workdir)
    try:
        wait_answering(server)
        yield server
    finally:
        stop(proc)


def wait_answering(server: Server) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with server.connect(timeout=2) as sock:
                sock.sendall(b"GET /__ready HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
                if read_until_close(sock, 5.0).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the {server.interface} server did not start:\n{server.log}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_until_close(sock: socket.socket, timeout: float, idle: float | None = None) -> bytes:
    """Read until the server closes, `timeout` passes, or (with idle) nothing came for `idle` seconds."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks)
        sock.settimeout(min(left, idle) if idle else left)
        try:
            chunk = sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return b"".join(chunks)
        except ConnectionResetError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """True when the server closed (or reset) the connection within timeout, whatever it sent first."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(1 << 20):
                return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return b",".join(values) if values else None


@dataclass
class Responses:
    """The responses read off a connection, in order (interim 1xx ones dropped), and whether the bytes
    ended inside one."""

    items: list[Response] = field(default_factory=list)
    incomplete: bool = False
    garbage: bool = False

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.items]


def parse_responses(data: bytes) -> Responses:
    """Split what a server sent into responses. Bodies by Content-Length, chunked, or up to the close."""
    out = Responses()
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            out.incomplete = True
            return out
        head, data = data[:end], data[end + 4 :]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            out.garbage = True
            return out
        status = int(parts[1])
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:] if b":" in line]
        if 100 <= status < 200 and status != 101:
            continue
        response = Response(status, headers, b"", head)  # type: ignore[arg-type]
        if status == 101:
            out.items.append(response)
            return out  # what follows is no longer HTTP
        body, data, complete = _body(response, data)
        response.body = body
        out.items.append(response)
        if not complete:
            out.incomplete = True
            return out
    return out


def _body(response: Response, data: bytes) -> tuple[bytes, bytes, bool]:
    if response.status in (204, 304):
        return b"", data, True
    encoding = (response.header(b"transfer-encoding") or b"").lower()
    if b"chunked" in encoding:
        return _chunked(data)
    length = response.header(b"content-length")
    if length is not None and length.strip().isdigit():
        size = int(length)
        return data[:size], data[size:], len(data) >= size
    return data, b"", True


def _chunked(data: bytes) -> tuple[bytes, bytes, bool]:
    parts: list[bytes] = []
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return b"".join(parts), b"", False
        size = int(data[:line_end].split(b";")[0].strip() or b"0", 16)
        data = data[line_end + 2 :]
        if size == 0:
            if data.startswith(b"\r\n"):
                return b"".join(parts), data[2:], True
            end = data.find(b"\r\n\r\n")
            return b"".join(parts), (data[end + 4 :] if end >= 0 else b""), end >= 0
        parts.append(data[:size])
        data = data[size + 2 :]
