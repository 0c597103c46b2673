"""HTTP/1.1 as the engine speaks it to WSGI apps (connection.py + wsgi_threads.py), over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import APPS


@pytest.fixture(params=["threads"], scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    with serving(request.param) as port:
        yield port, request.param


@pytest.fixture(scope="module")
def threads_engine() -> Iterator[int]:
    with serving("threads") as port:
        yield port


@contextmanager
def serving(engine: str) -> Iterator[int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(APPS)}
    env.pop("NOTIFY_SOCKET", None)
    script = f'exec 3>&{listener.fileno()}; LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"'
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            script,
            "bash",
            sys.executable,
            "-m",
            "sockact",
            "run",
            "wsgi_edge:app",
            "--log-level",
            "warning",
        ],
        pass_fds=(listener.fileno(),),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "the worker did not start"
            time.sleep(0.05)
    yield port
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send data as is; read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_keep_alive_serves_several_requests_on_one_connection(server: tuple[int, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    for _ in range(3):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello\n")
        assert response.getheader("Content-Length") == "6" and response.getheader("Date")
    conn.close()


def test_pipelined_requests_are_answered_in_order(server: tuple[int, str]) -> None:
    answer = raw(
        server[0],
        b"GET /environ?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /environ?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"n=1"') < answer.index(b'"n=2"')


def test_request_bodies_by_length_chunked_and_expect_continue(server: tuple[int, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    conn.request("POST", "/echo", body=b"a body", headers={"Content-Type": "text/plain"})
    assert conn.getresponse().read() == b"a body"
    conn.request(
        "POST",
        "/echo",
        body=iter([b"chunk one, ", b"chunk two"]),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    assert conn.getresponse().read() == b"chunk one, chunk two"
    conn.close()
    with socket.create_connection(("127.0.0.1", server[0]), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"later")
        answer = b""
        while not answer.endswith(b"later"):
            answer += sock.recv(4096)
        assert b" 200 OK" in answer


def test_a_body_larger_than_memory_buffering_arrives_whole(server: tuple[int, str]) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=30)
    conn.request("POST", "/length", body=body)
    assert conn.getresponse().read() == str(len(body)).encode()
    conn.request("GET", "/big")
    assert len(conn.getresponse().read()) == 4 * 1024 * 1024
    conn.close()


def test_environ(server: tuple[int, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    conn.putrequest("POST", "/environ/a%20b?x=1&y=%20")
    conn.putheader("Content-Type", "text/plain")
    conn.putheader("X-Twice", "one")
    conn.putheader("X-Twice", "two")
    conn.putheader("X-Client-Tag", "proxy-set")
    conn.putheader("X_Client_Tag", "spoofed")  # must not pass for the header a proxy sets
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    seen = json.loads(conn.getresponse().read())
    conn.close()
    # PATH_INFO is decoded, QUERY_STRING is not (PEP 3333); repeated headers are joined with commas.
    seen["HTTP_X_TWICE"] = seen["HTTP_X_TWICE"].replace(" ", "")  # waitress adds a space
    assert seen == {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/environ/a b",
        "QUERY_STRING": "x=1&y=%20",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_TWICE": "one,two",
        "REMOTE_ADDR": "127.0.0.1",
        "SCRIPT_NAME": "",
        "wsgi.url_scheme": "http",
        "HTTP_X_CLIENT_TAG": "proxy-set",
    }


def test_responses_without_a_length(server: tuple[int, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b"one two three"
    conn.request("GET", "/write")  # the connection is still usable after a chunked response
    assert conn.getresponse().read() == b"written, then returned"
    conn.close()
    answer = raw(server[0], b"GET /stream HTTP/1.0\r\n\r\n")  # HTTP/1.0: the body ends where the connection does
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 1)[1].startswith(b"200 OK") and b"chunked" not in head.lower() and body == b"one two three"


def test_head_and_no_content_have_no_body(threads_engine: int) -> None:
    # waitress sends the app's body after a HEAD response: only sockact's own engine is held to this.
    answer = raw(
        threads_engine,
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /no-content HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    first, second, third = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK") and b"content-length: 6" in first.lower() and first.endswith(b"\r\n\r\n")
    assert second.startswith(b"204 No Content") and second.endswith(b"\r\n\r\n")
    assert third.endswith(b"\r\n\r\nhello\n")


def test_app_error_is_a_500_and_the_worker_keeps_serving(server: tuple[int, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    conn.request("GET", "/boom")
    response = conn.getresponse()
    response.read()
    assert response.status == 500
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()


def test_garbage_gets_400_and_a_closed_connection(server: tuple[int, str]) -> None:
    answer = raw(server[0], b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.split(b" ", 1)[1].startswith(b"400 ")


def test_connection_close_is_honoured(server: tuple[int, str]) -> None:
    answer = raw(server[0], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # raw() reads to EOF
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello\n")


def test_threads_engine_app_misbehaviour(threads_engine: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", threads_engine, timeout=10)
    conn.request("GET", "/overlong")  # more than its Content-Length: cut there, and the connection closed
    response = conn.getresponse()
    assert response.read() == b"12345" and response.getheader("Connection") != "keep-alive"
    conn.close()
    for _ in range(12):  # more than the threads: SystemExit in the app must not end a thread
        answer = raw(threads_engine, b"GET /exit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")
    answer = raw(threads_engine, b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert raw(threads_engine, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"hello\n")


def test_threads_engine_sends_100_continue_after_earlier_responses(threads_engine: int) -> None:
    with socket.create_connection(("127.0.0.1", threads_engine), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = b""
        while b"100 Continue" not in answer:
            answer += sock.recv(4096)
        assert answer.index(b"200 OK") < answer.index(b"100 Continue")


def test_threads_engine_limits_the_request_head_and_drops_idle_keep_alive(threads_engine: int) -> None:
    port = threads_engine  # waitress has limits of its own (262 KB head, 120 s idle)
    answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * (70 * 1024) + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    stalled = socket.create_connection(("127.0.0.1", port), timeout=15)
    stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        began = time.monotonic()
        received = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        idle = time.monotonic() - began
    assert received.endswith(b"hello\n")
    assert 4 < idle < 8, f"an idle keep-alive connection was closed after {idle:.1f} s (expected about 5)"
    with stalled:
        # A head still arriving after --head-timeout (10 s) gets 408 and its connection closes.
        answer = b""
        while chunk := stalled.recv(4096):
            answer += chunk
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
