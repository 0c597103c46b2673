"""The ASGI app of the fault benchmark: the hello route plus routes that break the worker serving them.

GET /          the 13-byte body, as bench.apps.asgi
GET /crash     the worker process exits at once (os._exit(1)), as a segfaulting extension would
GET /hang      blocks the worker's event loop (time.sleep in the handler, a sync call in async code)
GET /grow?mb=N keeps N MiB more in the worker for good (a leak)
GET /log?bytes=N writes one line of N bytes (default 60) to stderr, then answers as /
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import parse_qs

from .asgi import BODY, Receive, Scope, Send, _lifespan

HANG_S = 3600.0  # longer than any fault; the harness kills what is left afterwards
GROW_LIMIT_MB = 2048
LOG_LIMIT_BYTES = 65536
_LEAK: list[bytes] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/crash":
        os._exit(1)
    if path == "/hang":
        time.sleep(HANG_S)  # noqa: ASYNC251 - deliberately blocking: the bug under test
    elif path == "/grow":
        grow(scope["query_string"].decode())
    elif path == "/log":
        # One line per request, as an app logging through stderr to the journal does.
        sys.stderr.write(log_line(scope["query_string"].decode()))
        sys.stderr.flush()
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"%d" % len(BODY)),
        (b"x-worker", b"%d" % os.getpid()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def log_line(query: str) -> str:
    size = min(int(parse_qs(query).get("bytes", ["60"])[0]), LOG_LIMIT_BYTES)
    return f"served /log in worker {os.getpid()} ".ljust(size - 1, ".") + "\n"


def grow(query: str) -> None:
    """Keep mb MiB of written (so resident) memory referenced from a module global."""
    mb = min(int(parse_qs(query).get("mb", ["0"])[0]), GROW_LIMIT_MB)
    _LEAK.append(b"\x01" * (mb << 20))
