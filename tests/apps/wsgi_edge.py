"""A WSGI app with one route per corner of HTTP/1.1 the WSGI engines must get right (tests/local/test_wsgi_engines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Callable


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/length":  # reads the body in small pieces, answers with its size
        size = 0
        while True:
            piece = environ["wsgi.input"].read(4096)
            if not piece:
                break
            size += len(piece)
        text = str(size).encode()
        start_response("200 OK", [("Content-Length", str(len(text)))])
        return [text]
    if path.startswith("/environ"):
        keys = (
            "REQUEST_METHOD",
            "PATH_INFO",
            "QUERY_STRING",
            "SERVER_PROTOCOL",
            "CONTENT_TYPE",
            "HTTP_X_TWICE",
            "REMOTE_ADDR",
            "SCRIPT_NAME",
            "wsgi.url_scheme",
            "HTTP_X_CLIENT_TAG",
        )
        text = json.dumps({key: environ.get(key) for key in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(text)))])
        return [text]
    if path == "/stream":  # no Content-Length: chunked for HTTP/1.1, the connection's end for HTTP/1.0
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _pieces()
    if path == "/write":  # the legacy write() callable
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]
    if path == "/overlong":  # announces 5 bytes, returns 10
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"67890"]
    if path == "/text":  # a str where bytes belong
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter(["not bytes"])
    if path == "/exit":
        raise SystemExit(1)
    if path == "/boom":
        raise RuntimeError("the app failed on purpose")
    if path == "/big":
        body = b"x" * (4 * 1024 * 1024)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _pieces() -> Iterator[bytes]:
    yield from (b"one ", b"two ", b"three")  # a generator, so no length is known up front
