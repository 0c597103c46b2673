"""A recording ASGI app and WSGI app for the HTTP wire tests (tests/local: test_http_defects.py, test_http_fuzz.py).

Each request the app sees is appended, as JSON lines, to the file named by SOCKACT_TEST_RECORD: a "head"
line as soon as the app is called, then a "body" line once the body was read to its end (or reading it
failed). Both carry the client's port, so a test finds the requests of its own connection. Paths under
/__ are the routes that misbehave on purpose; every other path reads the body and answers 200 with the
request's target, so the order of the responses can be checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Callable
from urllib.parse import parse_qs

BIG = 8 * 1024 * 1024
BAD_NAMES = {"colon": "bad:name", "space": "bad name", "nul": "bad\x00name"}


def record(line: dict[str, Any]) -> None:
    path = os.environ.get("SOCKACT_TEST_RECORD")
    if not path:
        return
    data = (json.dumps(line) + "\n").encode()
    # One write() on an O_APPEND file: lines from several threads never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def text(value: bytes) -> str:
    return value.decode("latin-1")


# ASGI ----------------------------------------------------------------------------------------------------------
async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    port = scope["client"][1] if scope.get("client") else None
    if scope["type"] == "websocket":
        await websocket(scope, receive, send, port)
        return
    target = text(scope["raw_path"]) + ("?" + text(scope["query_string"]) if scope["query_string"] else "")
    record(
        {
            "event": "head",
            "port": port,
            "method": scope["method"],
            "target": target,
            "version": scope["http_version"],
            "headers": [[text(n), text(v)] for n, v in scope["headers"]],
        }
    )
    path = scope["path"]
    if path == "/__401":  # answers without reading the body
        await respond(send, 401, b"no")
        return
    if path == "/__raise":
        raise RuntimeError("TRACEBACK-MARKER raised by the app")
    if path == "/__big":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(BIG).encode())]})
        await send({"type": "http.response.body", "body": b"b" * BIG})
        return
    if path == "/__split":
        await send_split(send, parse_qs(text(scope["query_string"])).get("where", ["value"])[0])
        return
    if path == "/__badname":
        name = BAD_NAMES[parse_qs(text(scope["query_string"]))["name"][0]].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(name, b"x"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body, error = await read_body(receive)
    record({"event": "body", "port": port, "body": text(body), "error": error})
    await respond(send, 200, target.encode("latin-1"))


async def read_body(receive: Any) -> tuple[bytes, str | None]:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), "disconnect"
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), None


async def respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_split(send: Any, where: str) -> None:
    """Headers carrying CR/LF: a server that writes them as given lets the app inject a header."""
    status: Any = 200
    if where == "name":
        header = (b"x-a\r\nx-injected: 1\r\nx-b", b"v")
    elif where == "status":  # not an int: a server that formats it as given writes the line
        status, header = "200 OK\r\nX-Injected: 1\r\nX-B:", (b"x-a", b"v")
    else:
        header = (b"x-a", b"v\r\nx-injected: 1")
    await send({"type": "http.response.start", "status": status, "headers": [header, (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def websocket(scope: dict[str, Any], receive: Any, send: Any, port: int | None) -> None:
    record({"event": "websocket", "port": port, "target": text(scope["raw_path"])})
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text") or ""})


# WSGI ----------------------------------------------------------------------------------------------------------
def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    port = int(environ["REMOTE_PORT"]) if environ.get("REMOTE_PORT") else None
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]
    headers = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    record(
        {
            "event": "head",
            "port": port,
            "method": environ["REQUEST_METHOD"],
            "target": target,
            "version": environ["SERVER_PROTOCOL"].removeprefix("HTTP/"),
            "environ": headers,
        }
    )
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/__401":
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"no"]
    if path == "/__raise":
        raise RuntimeError("TRACEBACK-MARKER raised by the app")
    if path == "/__big":
        start_response("200 OK", [("Content-Length", str(BIG))])
        return [b"b" * BIG]
    if path == "/__split":
        where = query.get("where", ["value"])[0]
        if where == "status":
            start_response("200 OK\r\nX-Injected: 1", [("Content-Length", "2")])
        elif where == "name":
            start_response("200 OK", [("X-A\r\nX-Injected: 1\r\nX-B", "v"), ("Content-Length", "2")])
        else:
            start_response("200 OK", [("X-A", "v\r\nX-Injected: 1"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/__badname":
        start_response("200 OK", [(BAD_NAMES[query["name"][0]], "x"), ("Content-Length", "2")])
        return [b"ok"]
    body, error = read_wsgi_body(environ)
    record({"event": "body", "port": port, "body": text(body), "error": error})
    answer = target.encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


def read_wsgi_body(environ: dict[str, Any]) -> tuple[bytes, str | None]:
    stream = environ["wsgi.input"]
    try:
        if environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            parts = []
            while piece := stream.read(65536):
                parts.append(piece)
            return b"".join(parts), None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = stream.read(length) if length > 0 else b""
        return body, None if len(body) == length else "short"
    except Exception as exc:  # noqa: BLE001 - the error itself is what the test looks at
        return b"", type(exc).__name__
