"""An app with a URL that kills its worker process, as a segfault in a C extension would.

GET /crash -> the worker exits at once (os._exit(1)), mid-request
GET /      -> "worker N pid P"
`app` is the ASGI version, `application` the WSGI one.
"""

from __future__ import annotations

import os
from typing import Any, Callable


def _body() -> bytes:
    return f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()}\n".encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/crash":
        os._exit(1)
    body = _body()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/crash":
        os._exit(1)
    body = _body()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
