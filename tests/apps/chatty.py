"""An app that writes to every log channel on each request: logging, print() (stdout) and stderr
(wsgi.errors for WSGI). Serves `app` (ASGI) and `application` (WSGI)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("chatty")


def chatter(path: str, errors: Any) -> bytes:
    log.warning("a warning from worker %s on %s", os.environ.get("SOCKACT_WORKER"), path)
    print(f"printed by worker {os.environ.get('SOCKACT_WORKER')} on {path}", flush=True)
    errors.write(f"an error line from worker {os.environ.get('SOCKACT_WORKER')} on {path}\n")
    errors.flush()
    return f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()}\n".encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = chatter(scope["path"], sys.stderr) if scope["path"].startswith("/log") else b"quiet\n"
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    body = chatter(path, environ["wsgi.errors"]) if path.startswith("/log") else b"quiet\n"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
