"""Apps that answer with who they think the client is (tests/local/test_forwarded_serving.py): an ASGI app
(HTTP and WebSocket) and a WSGI app."""

from __future__ import annotations

import json
from typing import Any, Callable


async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]  # startup or shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    seen = json.dumps({"client": scope["client"], "scheme": scope["scheme"]})
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": seen})
        await send({"type": "websocket.close"})
        return
    body = seen.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS")
    body = json.dumps({key: environ.get(key) for key in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
