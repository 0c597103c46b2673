"""One regression test per known HTTP/1.1 defect, against both engines (`sockact run` of an ASGI app and of
a WSGI app) over real sockets: each asserts what the client sees and what reached the app (the app writes a
record of every request it saw, tests/apps/http_record.py)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpwire import INTERFACES, Server, closed_within, parse_responses, read_until_close, serving


@pytest.fixture(params=INTERFACES, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serving(request.param) as running:
        yield running


def exchange(server: Server, data: bytes, timeout: float = 5.0) -> tuple[bytes, int]:
    """Send data on a new connection, read until the server closes it (or timeout); the bytes and the
    client port the app's records carry."""
    with server.connect() as sock:
        port = sock.getsockname()[1]
        sock.sendall(data)
        answer = read_until_close(sock, timeout)
    server.barrier()
    return answer, port


def targets_seen(server: Server, port: int) -> list[str]:
    return [head["target"] for head in server.heads(port)]


def header_of(head: dict[str, Any], name: str) -> object:
    """A request header as the app saw it: from the ASGI headers list or the WSGI environ."""
    if "headers" in head:
        values = [value for key, value in head["headers"] if key == name]
        return values[0] if len(values) == 1 else values
    return head["environ"].get("HTTP_" + name.upper().replace("-", "_"))


# 1. RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing: close after the response.
def test_http10_chunked_keep_alive_never_serves_the_next_request(server: Server) -> None:
    data = (
        b"POST /d1-first HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /d1-smuggled HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    )
    with server.connect() as sock:
        port = sock.getsockname()[1]
        sock.sendall(data)
        answer = read_until_close(sock, 5.0)
        closed = closed_within(sock, 0.5) or answer.count(b"HTTP/1.") <= 1
    server.barrier()
    responses = parse_responses(answer)
    print(f"{server.interface}: statuses {responses.statuses}, app saw {targets_seen(server, port)}")
    assert "/d1-smuggled" not in targets_seen(server, port)
    assert len(responses.items) <= 1 and closed, answer[:400]


# 2. Response splitting: CR/LF from the app must never reach the wire.
@pytest.mark.parametrize("where", ["name", "value", "status"])
def test_crlf_in_response_head_is_a_500_and_injects_nothing(server: Server, where: str) -> None:
    answer, _ = exchange(
        server, f"GET /__split?where={where} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    print(f"{server.interface} {where}: {answer[:200]!r}")
    assert b"x-injected" not in answer.lower()
    assert parse_responses(answer).statuses == [500], answer[:400]


# 3. A large announced body the app does not read: answered promptly, never spooled to disk.
def test_unread_huge_body_is_answered_promptly_without_spooling(server: Server) -> None:
    with serving(server.interface) as fresh:
        with fresh.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            # 96 MiB: under the default --max-body (100M), so the app is called and answers without reading.
            sock.sendall(b"POST /__401 HTTP/1.1\r\nHost: x\r\nContent-Length: 100663296\r\n\r\n")
            # Up to 8 MiB of the announced 96: enough to pass any in-memory buffer and show a spool.
            sent = send_for(sock, b"a" * (8 << 20), 2.0)
            started = time.monotonic()
            answer = read_until_close(sock, 5.0, idle=3.0)
            waited = time.monotonic() - started
            spooled = spooled_bytes(fresh)
        print(
            f"{fresh.interface}: sent {sent} body bytes, answer after {waited:.2f} s: {answer[:60]!r}, "
            f"temporary files {spooled} bytes"
        )
        assert parse_responses(answer).statuses[:1] == [401], answer[:300]
        assert spooled <= 256 * 1024


def test_a_body_over_the_limit_is_refused_from_its_content_length(server: Server) -> None:
    mark = server.mark()
    with server.connect() as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"POST /__401 HTTP/1.1\r\nHost: x\r\nContent-Length: 536870912\r\n\r\n")
        sent = send_for(sock, b"a" * (4 << 20), 2.0)
        started = time.monotonic()
        answer = read_until_close(sock, 5.0, idle=3.0)
        waited = time.monotonic() - started
    print(f"{server.interface}: 512 MiB announced, {sent} sent, answer after {waited:.2f} s: {answer[:40]!r}")
    assert parse_responses(answer).statuses[:1] == [413], answer[:300]
    server.barrier()
    assert not server.records(port, since=mark), "a request whose body is over --max-body must not reach the app"


def send_for(sock: socket.socket, data: bytes, timeout: float) -> int:
    """Send as much of data as the server takes within timeout; the count sent."""
    sock.settimeout(timeout)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:])
    except (socket.timeout, TimeoutError, ConnectionError):
        pass
    return sent


def spooled_bytes(server: Server) -> int:
    """Bytes in the server's TMPDIR: files in it, and open files under it already unlinked (O_TMPFILE)."""
    total = sum(path.stat().st_size for path in server.tmpdir.rglob("*") if path.is_file())
    fds = Path(f"/proc/{server.proc.pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith(str(server.tmpdir)):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total


# 4. Framing errors inside a body: an answer (or a close) within seconds, and the app's read ends in an error.
FRAMING = {
    "bad chunk size": b"zz\r\nhello\r\n0\r\n\r\n",
    "bad chunk extension": b'5;\x01="\r\nhello\r\n0\r\n\r\n',
    "no CRLF after chunk data": b"5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n",
    "Content-Length trailer": b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_framing_error_in_a_chunked_body_never_hangs(server: Server, case: str) -> None:
    with server.connect() as sock:
        port = sock.getsockname()[1]
        sock.sendall(
            f"POST /d4?{case.replace(' ', '-')} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"3\r\nabc\r\n"
        )
        wait_for(lambda: server.heads(port), 1.0)  # the ASGI app is then waiting in receive()
        sock.sendall(FRAMING[case])
        started = time.monotonic()
        answer = read_until_close(sock, 5.0)
        waited = time.monotonic() - started
    server.barrier()
    statuses = parse_responses(answer).statuses
    bodies = [line for line in server.records(port) if line["event"] == "body"]
    print(
        f"{server.interface} {case}: {statuses} after {waited:.2f} s; app: {server.heads(port) and 'called'} {bodies}"
    )
    assert waited < 4.5, "the server neither answered nor closed"
    assert all(status >= 400 for status in statuses), answer[:300]
    assert all(body["error"] for body in bodies), "the app read a broken body as a complete one"
    if server.heads(port):
        assert wait_for(lambda: [line for line in server.records(port) if line["event"] == "body"], 3.0), (
            "the app is still waiting for the body"
        )


def test_unknown_transfer_coding_is_rejected(server: Server) -> None:
    answer, port = exchange(
        server, b"POST /d4-xchunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    print(f"{server.interface}: {parse_responses(answer).statuses}, app saw {targets_seen(server, port)}")
    assert targets_seen(server, port) == []
    assert parse_responses(answer).statuses[:1] in ([400], [501]), answer[:300]


def wait_for(check: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()  # type: ignore[operator]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


# 5. Clients that never read their large responses must not take every thread.
def test_clients_that_do_not_read_do_not_stop_others(server: Server) -> None:
    with serving(server.interface) as fresh:
        stuck = []
        for _ in range(6):  # 3 x the WSGI server's 2 threads
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", fresh.port))
            sock.sendall(b"GET /__big HTTP/1.1\r\nHost: x\r\n\r\n")
            stuck.append(sock)
        wait_for(lambda: len([r for r in fresh.records() if r.get("target") == "/__big"]) >= 2, 5.0)
        started = time.monotonic()
        try:
            with fresh.connect(timeout=5) as sock:
                sock.sendall(b"GET /d5-normal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = read_until_close(sock, 5.0)
        finally:
            for sock in stuck:
                sock.close()
        waited = time.monotonic() - started
        print(f"{fresh.interface}: the reading client was answered after {waited:.2f} s: {answer[:40]!r}")
        assert parse_responses(answer).statuses == [200]


# 6. A request pipelined behind a WebSocket upgrade request: answers in order.
def test_request_pipelined_after_websocket_upgrade_is_answered_in_order(server: Server) -> None:
    upgrade = (
        b"GET /d6-ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    plain = b"GET /d6-after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer, port = exchange(server, upgrade + plain, timeout=3.0)
    responses = parse_responses(answer)
    print(f"{server.interface}: {responses.statuses}, app saw {targets_seen(server, port)}")
    assert responses.items, "no answer at all"
    first = responses.items[0]
    if first.status == 101:  # what follows the 101 is WebSocket frames: never an HTTP request
        assert "/d6-after" not in targets_seen(server, port)
    else:
        assert [response.body for response in responses.items] == [b"/d6-ws", b"/d6-after"], answer[:400]


# 7. RFC 9110 §5.5: leading and trailing whitespace is not part of a field value.
def test_trailing_whitespace_of_header_values_is_stripped(server: Server) -> None:
    answer, port = exchange(server, b"GET /d7 HTTP/1.1\r\nHost: x\r\nX-A: v  \t\r\nConnection: close\r\n\r\n")
    heads = server.heads(port)
    print(f"{server.interface}: app saw X-A {[header_of(head, 'x-a') for head in heads]!r}")
    assert parse_responses(answer).statuses == [200] and len(heads) == 1
    assert header_of(heads[0], "x-a") == "v"


# 8. A request target that is no URI reference never reaches the app.
def test_invalid_request_target_is_rejected(server: Server) -> None:
    answer, port = exchange(server, b"GET s://]ufd/:x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    print(f"{server.interface}: {parse_responses(answer).statuses}, app saw {targets_seen(server, port)}")
    assert targets_seen(server, port) == []
    assert parse_responses(answer).statuses == [400], answer[:300]


# Found by tests/local/test_http_fuzz.py: request heads h11 rejects that reach the app today.
@pytest.mark.parametrize(
    "head",
    [
        b"PATCH /d-noversion\r\nHost: x\r\n\r\n",
        b"GET /d-nohost HTTP/1.1\r\n\r\n",
        b"GET /d-bare-lf HTTP/1.1\r\nHost: x\r\n\r\nGET /d-lf HTTP/1.1\nHost: x\n\n",
    ],
    ids=["no-version", "no-host", "bare-lf-without-400"],
)
def test_request_heads_h11_rejects_get_a_400(server: Server, head: bytes) -> None:
    answer, port = exchange(server, head)
    seen = targets_seen(server, port)
    print(f"{server.interface}: {parse_responses(answer).statuses}, app saw {seen}")
    # RFC 9112 §3 (a request line names its version), §3.2 (HTTP/1.1 without Host: 400), §2.2 (a bare LF may
    # be refused, but with a 400, not by dropping the request unanswered).
    assert [target for target in seen if target != "/d-bare-lf"] == []
    assert parse_responses(answer).statuses[-1:] == [400], answer[:300]


# 9. Header names set by the app that are not tokens never reach the wire.
@pytest.mark.parametrize("name", ["colon", "space", "nul"])
def test_app_header_name_that_is_no_token_is_a_500(server: Server, name: str) -> None:
    answer, _ = exchange(
        server, f"GET /__badname?name={name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    print(f"{server.interface} {name}: {answer[:160]!r}")
    assert not any(bad in answer for bad in (b"bad:name", b"bad name", b"bad\x00name"))
    assert parse_responses(answer).statuses == [500], answer[:300]


# 10. `close` among the connection options closes, whatever else is listed.
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_connection_keep_alive_close_closes(server: Server, version: str) -> None:
    data = (
        f"GET /d10-first HTTP/{version}\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n"
        f"GET /d10-second HTTP/{version}\r\nHost: x\r\n\r\n"
    ).encode()
    with server.connect() as sock:
        port = sock.getsockname()[1]
        sock.sendall(data)
        started = time.monotonic()
        answer = read_until_close(sock, 3.0)
        waited = time.monotonic() - started
    server.barrier()
    print(
        f"{server.interface}: {parse_responses(answer).statuses} closed after {waited:.2f} s, "
        f"app saw {targets_seen(server, port)}"
    )
    assert targets_seen(server, port) == ["/d10-first"]
    assert parse_responses(answer).statuses == [200] and waited < 2.5


# 11. A connection left by a failed WebSocket handshake must not hold up the drain on SIGTERM.
def test_sigterm_after_failed_websocket_handshake_exits_promptly(server: Server) -> None:
    with serving(server.interface, "--stop-timeout", "10") as fresh:
        sock = fresh.connect()
        sock.sendall(
            b"GET /d11-ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = read_until_close(sock, 2.0, idle=1.0)
        started = time.monotonic()
        fresh.proc.terminate()
        try:
            fresh.proc.wait(timeout=12)
        finally:
            sock.close()
        took = time.monotonic() - started
        print(f"{fresh.interface}: handshake answer {answer[:40]!r}; exited {took:.2f} s after SIGTERM")
        assert took < 2.0


# Also: no traceback text in a response; connections that send nothing are closed.
def test_app_exception_answers_500_without_traceback(server: Server) -> None:
    answer, _ = exchange(server, b"GET /__raise HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    print(f"{server.interface}: {answer[:120]!r}")
    assert parse_responses(answer).statuses == [500]
    assert b"Traceback" not in answer and b"TRACEBACK-MARKER" not in answer


@pytest.mark.parametrize("first", [b"", b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["silent", "after-request"])
def test_idle_connection_is_closed_by_the_server(server: Server, first: bytes) -> None:
    with server.connect() as sock:
        sock.sendall(first)
        started = time.monotonic()
        closed = closed_within(sock, 10.0)
        took = time.monotonic() - started
    print(f"{server.interface}: idle connection closed={closed} after {took:.2f} s")
    assert closed
