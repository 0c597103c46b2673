"""The sans-I/O HTTP/1.1 core (sockact/runtime/http11.py): what a request is, what a response may say.

Every request is fed whole and again split into 1-byte pieces: the decision must not depend on how
the bytes arrive. The cases where sockact is stricter than a peer by design are named as such here.
"""

from __future__ import annotations

from typing import Any

import pytest

from sockact.runtime.http11 import DEFAULT_LIMITS, Head, Limits, RequestReader, ResponseError, ResponseHead, wsgi_status


class Recorder(RequestReader):
    def __init__(self, limits: Limits = DEFAULT_LIMITS, upgrades: tuple[bytes, ...] = (b"websocket",)) -> None:
        super().__init__(limits)
        self.events: list[Any] = []
        self.upgrades = upgrades

    def request_head(self, head: Head) -> None:
        self.events.append(
            (
                "head",
                head.method,
                head.path,
                head.query,
                head.version,
                head.headers,
                head.keep_alive,
                head.content_length,
                head.expect_continue,
            )
        )

    def request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def request_end(self) -> None:
        self.events.append("end")

    def request_error(self, status: int, reason: str) -> None:
        self.events.append(("error", status))

    def request_upgrade(self, head: Head, rest: bytes) -> None:
        self.events.append(("upgrade", head.upgrade, head.path))

    def wants_upgrade(self, token: bytes) -> bool:
        return token in self.upgrades


def parse(data: bytes, **limits: Any) -> list[Any]:
    whole = Recorder(Limits(**limits))
    whole.feed(data)
    split = Recorder(Limits(**limits))
    for i in range(len(data)):
        split.feed(data[i : i + 1])
    if not any(isinstance(event, tuple) and event[0] == "upgrade" for event in whole.events):
        assert split.events == whole.events, "the decision depends on how the bytes arrive"
    return whole.events


def errors(events: list[Any]) -> list[int]:
    return [event[1] for event in events if isinstance(event, tuple) and event[0] == "error"]


def heads(events: list[Any]) -> list[tuple[Any, ...]]:
    return [event for event in events if isinstance(event, tuple) and event[0] == "head"]


GET = b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"


def test_a_plain_request_and_its_keep_alive() -> None:
    events = parse(GET)
    assert events == [("head", "GET", b"/p", b"q=1", "1.1", [(b"host", b"h")], True, 0, False), "end"]


@pytest.mark.parametrize(
    ("connection", "version", "keep"),
    [
        (b"", b"1.1", True),
        (b"Connection: close\r\n", b"1.1", False),
        (b"Connection: keep-alive, close\r\n", b"1.1", False),  # defect 10: `close` anywhere closes
        (b"Connection: close, keep-alive\r\n", b"1.1", False),
        (b"Connection: keep-alive\r\nConnection: close\r\n", b"1.1", False),
        (b"Connection: Keep-Alive\r\n", b"1.0", True),
        (b"", b"1.0", False),
        (b"Connection: keep-alive, close\r\n", b"1.0", False),
    ],
)
def test_keep_alive_follows_the_connection_options(connection: bytes, version: bytes, keep: bool) -> None:
    host = b"Host: h\r\n" if version == b"1.1" else b""
    events = parse(b"GET / HTTP/" + version + b"\r\n" + host + connection + b"\r\n")
    assert heads(events)[0][6] is keep


def test_header_values_lose_surrounding_whitespace() -> None:  # defect 7 (RFC 9110 §5.5)
    events = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-A:  v v \t \r\nX-B:\t\r\n\r\n")
    assert heads(events)[0][5] == [(b"host", b"h"), (b"x-a", b"v v"), (b"x-b", b"")]


@pytest.mark.parametrize(
    "request_bytes",
    [
        # defect 1: HTTP/1.0 with Transfer-Encoding keeps no connection: the second request never comes.
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + GET,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + GET,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + GET,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" + GET,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc" + GET,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3 3\r\n\r\nabc" + GET,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n" + GET,  # obs-fold
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n" + GET,  # whitespace before the colon
        b'GET / HTTP/1.1\r\nHost: h\r\nbad"name: v\r\n\r\n' + GET,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n" + GET,
        b"GET / HTTP/1.1\nHost: h\n\n" + GET,  # bare LF
        b"GET s://]ufd/:x HTTP/1.1\r\nHost: h\r\n\r\n" + GET,  # defect 8
        b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n" + GET,
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n" + GET,
        b"GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n" + GET,
        b"GET / HTTP/1.1\r\n\r\n" + GET,  # stricter by design: HTTP/1.1 without Host (RFC 9112 §3.2; h11 agrees)
        # stricter by design (gunicorn serves these): a raw non-ASCII byte in the target (RFC 9112's target is
        # ASCII), a method llhttp does not know (a token all the same), a chunk extension after whitespace.
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n" + GET,
        b"-BLARGH / HTTP/1.1\r\nHost: h\r\n\r\n" + GET,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET,
        b"NOT HTTP\r\n\r\n" + GET,
    ],
)
def test_malformed_requests_get_400_and_nothing_after_them_is_read(request_bytes: bytes) -> None:
    events = parse(request_bytes)
    assert errors(events) == [400]
    assert events[-1] == ("error", 400)
    assert all(head[2] != b"/p" for head in heads(events))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # stricter by design: only `chunked` is served (RFC 9112 §6.1 lets a server answer 501); llhttp
        # would take `gzip, chunked` as chunked and hand the app a body still gzip-coded.
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),  # defect 4
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 501),  # not a proxy
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),  # llhttp knows no 1.2
    ],
)
def test_what_is_not_served_gets_its_status(request_bytes: bytes, status: int) -> None:
    assert errors(parse(request_bytes)) == [status]


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # bad chunk size
        b"3;\x01\r\nabc\r\n0\r\n\r\n",  # bad chunk extension
        b"3\r\nabcX\r\n0\r\n\r\n",  # no CRLF after the chunk data
        b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",  # a trailer that would change the framing
        b"3\r\nabc\r\n0\r\nHost: other\r\n\r\n",
        b"3; name=value\r\nabc\r\n0\r\n\r\n",  # stricter by design: whitespace before an extension (llhttp)
    ],
)
def test_a_framing_error_inside_a_body_is_reported_after_the_head(body: bytes) -> None:  # defect 4
    events = parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body + GET)
    assert heads(events)[0][7] == -1 and errors(events) == [400] and events[-1] == ("error", 400)


def test_chunked_bodies_extensions_and_allowed_trailers() -> None:
    events = parse(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 1\r\n\r\n" + GET
    )
    assert events[1:3] == [("body", b"abcde"), "end"]
    assert heads(events)[0][5] == [(b"host", b"h"), (b"transfer-encoding", b"Chunked")]  # trailers not added
    assert heads(events)[1][2] == b"/p"


@pytest.mark.parametrize(
    ("request_bytes", "limits", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", {"max_body": 10}, 413),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n",
            {"max_body": 10},
            413,
        ),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n", {"max_target": 50}, 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 11 + b"\r\n", {"max_fields": 10}, 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 100 + b"\r\n\r\n", {"max_field": 50}, 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 2000, {"max_head": 1000}, 431),  # a line that never ends
    ],
)
def test_limits_answer_with_their_status(request_bytes: bytes, limits: dict[str, int], status: int) -> None:
    events = parse(request_bytes, **limits)
    assert errors(events) == [status]


def test_a_body_limit_of_zero_means_none() -> None:
    events = parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde", max_body=0)
    assert ("body", b"abcde") in events and "end" in events


def test_absolute_form_asterisk_fragment_and_expect() -> None:
    events = parse(
        b"GET http://h:8/a%20b?c=d HTTP/1.1\r\nHost: h\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /f?x=1#frag HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx"
    )
    found = heads(events)
    assert [(head[2], head[3]) for head in found] == [(b"/a%20b", b"c=d"), (b"*", b""), (b"/f", b"x=1"), (b"/e", b"")]
    assert found[3][8] is True


def test_upgrades_taken_stop_parsing_and_others_close_after_the_response() -> None:
    ws = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert parse(ws + b"\x81\x00")[-1] == ("upgrade", b"websocket", b"/ws")
    h2c = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    events = parse(h2c + GET)
    assert [head[2] for head in heads(events)] == [b"/", b"/p"]  # served as HTTP/1.1, and the next one too
    smuggled = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 4\r\n\r\n"
    assert errors(parse(smuggled + b"abcd" + GET)) == [400]  # llhttp would not read that body


def response(
    status: int, headers: list[tuple[bytes, bytes]], method: str = "GET", version: str = "1.1", keep_alive: bool = True
) -> ResponseHead:
    return ResponseHead(status, headers, request_method=method, request_version=version, keep_alive=keep_alive)


def test_response_framing() -> None:
    plain = response(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")])
    assert plain.data == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\n"
    assert not plain.chunked and plain.length == 5 and plain.keep_alive
    unknown = response(200, [])
    assert unknown.chunked and b"transfer-encoding: chunked\r\n" in unknown.data
    old = response(200, [], version="1.0")
    assert not old.chunked and not old.keep_alive and b"connection: close\r\n" in old.data
    kept = response(200, [(b"content-length", b"0")], version="1.0")
    assert kept.keep_alive and b"connection: keep-alive\r\n" in kept.data
    head = response(200, [(b"content-length", b"9")], method="HEAD")
    assert head.skip_body and b"content-length: 9" in head.data
    empty = response(204, [])
    assert empty.skip_body and b"transfer-encoding" not in empty.data
    closing = response(200, [(b"Connection", b"Close"), (b"content-length", b"0")])
    assert not closing.keep_alive and closing.data.count(b"onnection") == 1
    both = response(200, [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")])
    assert both.chunked and b"content-length" not in both.data.lower()


@pytest.mark.parametrize(
    "headers",
    [
        [(b"bad:name", b"v")],
        [(b"bad name", b"v")],
        [(b"bad\x00", b"v")],
        [(b"", b"v")],  # defect 9
        [(b"X-A", b"v\r\nSet-Cookie: a=b")],
        [(b"X-A", b"v\nx")],
        [(b"X-A", b"v\rx")],
        [(b"X-A", b"v\x00")],  # splitting
        [(b"X-A\r\nSet-Cookie", b"a=b")],  # defect 2: CR/LF in a name
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1"), (b"Content-Length", b"2")],
        [(b"Transfer-Encoding", b"gzip")],
    ],
)
def test_response_heads_that_http_cannot_carry_are_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ResponseError):
        response(200, headers)


@pytest.mark.parametrize("status", [99, 600, "200", 200.0, -1])
def test_invalid_statuses_are_refused(status: Any) -> None:
    with pytest.raises(ResponseError):
        response(status, [])


def test_wsgi_status_lines() -> None:
    assert wsgi_status("200 OK") == (200, b"HTTP/1.1 200 OK\r\n")
    assert wsgi_status("599 Custom Reason\t!") == (599, b"HTTP/1.1 599 Custom Reason\t!\r\n")
    assert wsgi_status("200") == (200, b"HTTP/1.1 200\r\n")
    for bad in ("200 OK\r\nSet-Cookie: a=b", "200 OK\n", "20 OK", "2000 OK", "abc OK", "200 OK\x00", b"200 OK"):
        with pytest.raises(ResponseError):
            wsgi_status(bad)  # type: ignore[arg-type]
