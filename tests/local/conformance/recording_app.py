"""Apps that answer every request with what they received, as JSON: the gunicorn request corpus compares it.

The response carries `x-recorded: 1`, so the client can tell the app's answer from the server's own
(an error page); the app answers only once it has read the whole request body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, Callable


def _answer(record: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    payload = json.dumps(record).encode()
    return payload, [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
        (b"x-recorded", b"1"),
    ]


async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the request never arrived whole: nothing recorded
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    payload, headers = _answer(
        {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "version": scope["http_version"],
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
            "body": base64.b64encode(body).decode(),
        }
    )
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    body = stream.read(int(length)) if length else stream.read()
    headers = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    payload, response_headers = _answer(
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "version": environ["SERVER_PROTOCOL"],
            "environ_headers": headers,
            "body": base64.b64encode(body).decode(),
        }
    )
    start_response("200 OK", [(name.decode(), value.decode()) for name, value in response_headers])
    return [payload]
