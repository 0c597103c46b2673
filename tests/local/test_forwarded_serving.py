"""--forwarded-allow-ips on real sockets: `sockact run --bind ...` with and without the option, and
what the app sees as its client and scheme (ASGI scope, WebSocket scope, WSGI environ)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import APPS

FORGED = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7", "X-Forwarded-Proto": "https"}

# app, extra run options, how the app reports the client and the scheme
ENGINES: dict[str, tuple[str, list[str]]] = {
    "asgi": ("forwarded_echo:asgi", []),
    "wsgi": ("forwarded_echo:wsgi", []),  # the same engine, the app on its thread pool
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(app: str, bind: str, options: list[str], connect: Any) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(APPS)}
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockact", "run", app, "--bind", bind, "--log-level", "warning", *options],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            connect().close()
            break
        except OSError:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the worker did not start listening"
            time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


def ask(connect: Any, head: dict[str, str], path: str = "/") -> dict[str, Any]:
    lines = [f"GET {path} HTTP/1.1", "Host: test", "Connection: close", *(f"{k}: {v}" for k, v in head.items())]
    with connect() as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status, _, rest = response.partition(b"\r\n")
    assert b" 200 " in status, response
    return dict(json.loads(rest.partition(b"\r\n\r\n")[2]))


def seen(engine: str, answer: dict[str, Any]) -> tuple[Any, str]:
    """(client host, scheme) as the app reported them."""
    if engine == "asgi":
        return (answer["client"][0] if answer["client"] else None), answer["scheme"]
    return answer["REMOTE_ADDR"], answer["wsgi.url_scheme"]


def tcp(port: int) -> Any:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_app_sees_the_forwarded_client_only_from_a_listed_proxy(engine: str) -> None:
    app, extra = ENGINES[engine]
    results: dict[str, tuple[Any, str]] = {}
    for label, options in (
        ("off", []),
        ("trusted", ["--forwarded-allow-ips", "127.0.0.1"]),
        ("other proxy", ["--forwarded-allow-ips", "10.0.0.1,::1"]),
    ):
        port = free_port()
        with serving(app, f"127.0.0.1:{port}", [*extra, *options], tcp(port)):
            results[label] = seen(engine, ask(tcp(port), FORGED))
            if label == "trusted":
                plain = seen(engine, ask(tcp(port), {}))
                assert plain == ("127.0.0.1", "http"), plain  # a trusted peer without headers is itself
                rfc = ask(tcp(port), {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'})
                assert seen(engine, rfc) == ("2001:db8::7", "https"), rfc
                if engine == "wsgi":
                    assert rfc["REMOTE_PORT"] == "4711" and rfc["HTTPS"] == "on", rfc
                if engine == "asgi":
                    assert rfc["client"] == ["2001:db8::7", 4711], rfc
    print(f"\n{engine}: {results}")
    assert results["off"] == ("127.0.0.1", "http")
    assert results["other proxy"] == ("127.0.0.1", "http")
    assert results["trusted"] == ("203.0.113.7", "https")


@pytest.mark.parametrize("engine", ["asgi", "wsgi"])
def test_a_unix_socket_proxy_is_believed_only_when_unix_is_listed(engine: str, tmp_path: Path) -> None:
    app, _ = ENGINES[engine]
    path = str(tmp_path / "app.sock")

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    results = {}
    for allow in ("127.0.0.1", "unix"):
        with serving(app, path, ["--forwarded-allow-ips", allow], connect):
            results[allow] = seen(engine, ask(connect, FORGED))
    print(f"\n{engine} on a Unix socket: {results}")
    assert results["127.0.0.1"] == (None, "http")  # a Unix socket peer has no address
    assert results["unix"] == ("203.0.113.7", "https")


def websocket_scope(port: int, head: dict[str, str]) -> dict[str, Any]:
    """Open a WebSocket by hand and read the one text frame the app sends."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in head.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head_bytes, _, data = data.partition(b"\r\n\r\n")
        assert head_bytes.startswith(b"HTTP/1.1 101"), head_bytes
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            data += sock.recv(65536)
        assert data[0] & 0x0F == 1 and data[1] < 126, data  # an unmasked short text frame
        return dict(json.loads(data[2 : 2 + data[1]]))


def test_a_websocket_scope_gets_the_forwarded_client_and_wss() -> None:
    pytest.importorskip("websockets")
    results = {}
    for label, options in (("off", []), ("trusted", ["--forwarded-allow-ips", "127.0.0.0/8"])):
        port = free_port()
        with serving("forwarded_echo:asgi", f"127.0.0.1:{port}", options, tcp(port)):
            results[label] = websocket_scope(port, FORGED)
    print(f"\nwebsocket: {results}")
    assert results["off"]["client"][0] == "127.0.0.1" and results["off"]["scheme"] == "ws"
    assert results["trusted"] == {"client": ["203.0.113.7", 0], "scheme": "wss"}


def test_a_bad_list_stops_sockact_run_in_one_line_before_serving() -> None:
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sockact",
            "run",
            "forwarded_echo:asgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--forwarded-allow-ips",
            "10.0.0.1/8",
        ],
        env={**os.environ, "PYTHONPATH": str(APPS)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "--forwarded-allow-ips" in last and "10.0.0.0/8" in last and "Traceback" not in proc.stderr
