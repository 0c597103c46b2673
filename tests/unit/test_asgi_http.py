"""sockact's own HTTP/1.1 protocol for ASGI apps (sockact/runtime/connection.py).

Every test serves a real listening socket with the protocol, on uvloop and on asyncio's own loop,
and talks to it with raw bytes, so what is checked is what goes over the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Self

import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState

from sockact.runtime import connection as asgi_http
from sockact.runtime.connection import HttpConnection, Site
from sockact.runtime.http11 import Limits

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
SEEN: list[dict[str, Any]] = []  # what the app received, for the tests to look at


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # echo, upper-cased
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"].upper()})
        return
    path = scope["path"]
    if path == "/echo":  # the request body's size and digest, read as it streams in
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        await respond(send, f"{size} {digest.hexdigest()}".encode())
    elif path == "/sleep":
        await asyncio.sleep(0.05)
        await respond(send, b"slept")
    elif path == "/stream":  # no Content-Length: chunked on HTTP/1.1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":  # 3 x 300 KB, streamed with a length
        part = b"z" * 300_000
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"900000")]})
        for last in (False, False, True):
            await send({"type": "http.response.body", "body": part, "more_body": not last})
    elif path == "/raise":
        raise RuntimeError("the app failed")
    elif path == "/raise-after":  # a complete response, then the app fails: the connection stays usable
        await respond(send, b"sent")
        await asyncio.sleep(0.02)
        raise RuntimeError("the app failed after its response")
    elif path == "/nothing":
        return
    elif path == "/split":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-evil", b"a\r\nset-cookie: b=1")]})
    elif path == "/two-listeners":  # two tasks waiting in receive() at once: both must hear the end
        assert (await receive())["type"] == "http.request"
        listeners = [asyncio.ensure_future(receive()) for _ in range(2)]
        await asyncio.sleep(0.01)
        await respond(send, b"both")
        SEEN.extend(await asyncio.wait_for(asyncio.gather(*listeners), 2))
    elif path == "/bad-length":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"many")]})
    elif path == "/wait-disconnect":
        assert (await receive())["type"] == "http.request"  # the (empty) body first
        await respond(send, b"", more=True)
        SEEN.append(await receive())
    else:
        SEEN.append(scope)
        await respond(send, path.encode())


async def respond(send: Any, body: bytes, more: bool = False) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": more})


class Served:
    """The protocol serving `app` on a loopback port, with the server's tick running."""

    def __init__(self) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None)
        config.load()
        self.state = ServerState()
        self.site = Site(config, self.state, {}, None, lambda: None)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.site.protocol, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.ticker = loop.create_task(self._tick())
        return self

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.site.tick()

    async def __aexit__(self, *exc: object) -> None:
        self.ticker.cancel()
        self.server.close()
        for connection in list(self.state.connections):
            connection.transport.close()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response: status, headers (lower-case names), body (chunked decoded; to EOF without a length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 5)
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return int(status_line.split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the server closed the connection (EOF within 2 s)."""
    try:
        return await asyncio.wait_for(reader.read(1), 2) == b""
    except (ConnectionError, asyncio.TimeoutError):
        return False


def serve(loop_name: str, scenario: Callable[[Served], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Served() as served:
            await scenario(served)

    SEEN.clear()
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())


GET = b"GET %b HTTP/1.1\r\nHost: t\r\n\r\n"
both_loops = pytest.mark.parametrize("loop_name", sorted(LOOPS))


@both_loops
def test_keep_alive_serves_many_requests_on_one_connection_with_the_scope_filled(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        for path in (b"/a", b"/b%20c?x=1&y=%20"):
            writer.write(GET % path)
            status, headers, body = await read_response(reader)
            assert status == 200 and b"connection" not in headers and b"date" not in headers
        assert body == b"/b c"
        scope = SEEN[-1]
        assert scope["raw_path"] == b"/b%20c" and scope["query_string"] == b"x=1&y=%20"
        assert scope["method"] == "GET" and scope["http_version"] == "1.1" and scope["scheme"] == "http"
        assert scope["client"][0] == "127.0.0.1" and scope["server"] == ("127.0.0.1", served.port)
        assert (b"host", b"t") in scope["headers"]
        assert served.state.total_requests == 2
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_pipelined_requests_are_answered_in_order(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/sleep" + GET % b"/second" + GET % b"/third")
        bodies = [(await read_response(reader))[2] for _ in range(3)]
        assert bodies == [b"slept", b"/second", b"/third"]
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_a_large_request_body_streams_through_in_parts(loop_name: str) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: far above HIGH_WATER, so reading pauses and resumes

    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for start in range(0, len(payload), 100_000):
            writer.write(payload[start : start + 100_000])
            await writer.drain()
        _, _, body = await read_response(reader)
        assert body == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        _, _, body = await read_response(reader)
        assert body == f"11 {hashlib.sha256(b'hello world').hexdigest()}".encode()
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_a_response_without_length_is_chunked_on_1_1_and_closes_on_1_0(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/stream")
        _, headers, body = await read_response(reader)
        assert headers[b"transfer-encoding"] == b"chunked" and body == b"one two three"
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        _status, headers, body = await read_response(reader)
        assert headers[b"connection"] == b"close" and b"transfer-encoding" not in headers
        assert body == b"one two three"
        assert await closed(reader)
        reader, writer = await served.connect()
        for path in (b"/a", b"/b"):  # HTTP/1.0 keeps the connection only when it asks and is told so
            writer.write(b"GET %b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path)
            _, headers, body = await read_response(reader)
            assert headers[b"connection"] == b"keep-alive" and body == path
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_head_sends_the_headers_without_the_body(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(b"HEAD /abc HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/next")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"content-length: 4" in head
        _, _, body = await read_response(reader)  # the next response follows the head directly
        assert body == b"/next"
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_100_continue_is_sent_only_when_the_app_reads_the_body(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        _, _, body = await read_response(reader)
        assert body.startswith(b"5 ")
        writer.write(b"POST /other HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        status, _, body = await read_response(reader)  # answered without reading: no 100 Continue
        assert status == 200 and body == b"/other"
        writer.close()

    serve(loop_name, scenario)


@both_loops
@pytest.mark.parametrize("path", [b"/raise", b"/nothing", b"/split", b"/bad-length"])
def test_an_app_that_fails_before_responding_gets_a_500_and_the_connection_closes(loop_name: str, path: bytes) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % path)
        status, headers, _body = await read_response(reader)
        assert status == 500 and headers[b"connection"] == b"close"
        assert b"set-cookie" not in headers  # the CR LF in a header value did not split the response
        assert await closed(reader)

    serve(loop_name, scenario)


@both_loops
def test_an_app_failing_after_its_response_does_not_cut_the_next_one(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/raise-after" + GET % b"/sleep")
        assert (await read_response(reader))[2] == b"sent"
        assert (await read_response(reader))[2] == b"slept"  # served while the first app failed
        writer.close()

    serve(loop_name, scenario)


@both_loops
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Unfinished: " + b"a" * (200 * 1024), 431),  # one line, never ended
    ],
)
def test_a_bad_request_gets_its_status_and_the_connection_closes(
    loop_name: str, request_bytes: bytes, status: int
) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(request_bytes)
        assert (await read_response(reader))[0] == status
        assert await closed(reader)

    serve(loop_name, scenario)


@both_loops
def test_idle_and_slow_connections_are_closed_by_the_sweep(loop_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asgi_http, "SWEEP_EVERY", 1)

    async def scenario(served: Served) -> None:
        served.site.limits = Limits(head_timeout=0.3, keep_alive=0.3)
        idle_reader, idle_writer = await served.connect()
        idle_writer.write(GET % b"/a")
        await read_response(idle_reader)
        slow_reader, slow_writer = await served.connect()
        slow_writer.write(b"GET / HTTP/1.1\r\nHo")  # and never the rest
        busy_reader, busy_writer = await served.connect()
        for _ in range(8):  # a connection in use is not idle
            busy_writer.write(GET % b"/sleep")
            await read_response(busy_reader)
        assert await closed(idle_reader)
        assert (await read_response(slow_reader))[0] == 408
        busy_writer.close()

    serve(loop_name, scenario)


@both_loops
def test_drain_closes_idle_connections_and_answers_busy_ones_with_close(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        idle_reader, idle_writer = await served.connect()
        idle_writer.write(GET % b"/a")
        await read_response(idle_reader)
        busy_reader, busy_writer = await served.connect()
        busy_writer.write(GET % b"/sleep")
        await asyncio.sleep(0.01)
        for connection in list(served.state.connections):
            connection.shutdown()
        _status, headers, body = await read_response(busy_reader)
        assert body == b"slept" and headers[b"connection"] == b"close"  # served, not reset
        assert await closed(busy_reader)
        assert await closed(idle_reader)  # after IDLE_GRACE

    serve(loop_name, scenario)


@both_loops
def test_a_request_on_the_wire_when_drain_starts_is_served(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/a")
        await read_response(reader)
        for connection in list(served.state.connections):
            connection.shutdown()
        writer.write(GET % b"/late")  # within IDLE_GRACE
        _status, headers, body = await read_response(reader)
        assert body == b"/late" and headers[b"connection"] == b"close"

    serve(loop_name, scenario)


@both_loops
def test_the_app_hears_of_a_client_that_left(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/wait-disconnect")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        for _ in range(200):
            if SEEN:
                break
            await asyncio.sleep(0.01)
        assert SEEN == [{"type": "http.disconnect"}]
        assert not served.state.connections

    serve(loop_name, scenario)


def test_connections_are_counted_and_forgotten() -> None:
    async def scenario(served: Served) -> None:
        readers = []
        for _ in range(3):
            reader, writer = await served.connect()
            writer.write(GET % b"/a")
            await read_response(reader)
            readers.append(writer)
        assert len(served.state.connections) == 3
        assert all(isinstance(c, HttpConnection) for c in served.state.connections)
        for writer in readers:
            writer.close()
        for _ in range(200):
            if not served.state.connections:
                break
            await asyncio.sleep(0.01)
        assert not served.state.connections and not served.state.tasks

    serve("uvloop", scenario)


@both_loops
def test_a_websocket_upgrade_is_handed_to_uvicorns_websocket_protocol(loop_name: str) -> None:
    websockets = pytest.importorskip("websockets")

    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()  # plain HTTP on the same server still works
        writer.write(GET % b"/a")
        assert (await read_response(reader))[2] == b"/a"
        async with websockets.connect(f"ws://127.0.0.1:{served.port}/ws") as socket:
            for text in ("hello", "again"):
                await socket.send(text)
                assert await asyncio.wait_for(socket.recv(), 5) == text.upper()
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_every_receive_waiting_at_once_hears_the_response_end(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/two-listeners")
        assert (await read_response(reader))[2] == b"both"
        for _ in range(200):
            if SEEN:
                break
            await asyncio.sleep(0.01)
        assert SEEN == [{"type": "http.disconnect"}] * 2
        writer.close()

    serve(loop_name, scenario)


@both_loops
def test_a_body_the_app_did_not_read_closes_the_connection_after_the_response(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(b"POST /unread HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert (await read_response(reader))[2] == b"/unread"
        assert await closed(reader)  # not left open waiting for 90 bytes that may never come

    serve(loop_name, scenario)


@both_loops
def test_a_bad_request_behind_a_good_one_is_answered_after_it(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(GET % b"/sleep" + b"NOT HTTP AT ALL\r\n\r\n")
        assert (await read_response(reader))[:3:2] == (200, b"slept")
        assert (await read_response(reader))[0] == 400
        assert await closed(reader)

    serve(loop_name, scenario)


@both_loops
def test_drain_drops_a_request_head_that_stalled(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()
        writer.write(b"GET / HTTP/1.1\r\nHo")  # and never the rest
        await asyncio.sleep(0.05)
        for connection in list(served.state.connections):
            connection.shutdown()
        started = asyncio.get_running_loop().time()
        assert await closed(reader)
        assert asyncio.get_running_loop().time() - started < 1.9  # two looks, IDLE_GRACE apart

    serve(loop_name, scenario)


@both_loops
def test_a_large_response_with_connection_close_arrives_whole(loop_name: str) -> None:
    async def scenario(served: Served) -> None:
        reader, writer = await served.connect()  # the last part goes out corked, with the FIN
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 200 and headers[b"connection"] == b"close" and body == b"z" * 900_000
        assert await closed(reader)

    serve(loop_name, scenario)


def segments_received(loop_name: str, path: bytes) -> int:
    """TCP segments the client took in for one `Connection: close` request, FIN included (TCP_INFO's
    tcpi_segs_in, at byte 140 of struct tcp_info since Linux 4.2)."""
    counted: list[int] = []

    async def scenario(served: Served) -> None:
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.setblocking(False)
            await loop.sock_sendall(sock, b"GET %b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path)
            while await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
                pass
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            counted.append(struct.unpack_from("=I", info, 140)[0])

    serve(loop_name, scenario)
    return counted[0]


@both_loops
def test_the_end_of_a_close_response_and_the_fin_arrive_in_one_segment(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corked = segments_received(loop_name, b"/a")
    monkeypatch.setattr(HttpConnection, "cork", lambda self: None)
    uncorked = segments_received(loop_name, b"/a")
    print(f"\nsegments received for one Connection: close request: {corked} corked, {uncorked} without")
    assert corked < uncorked
