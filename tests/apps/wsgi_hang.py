"""A WSGI app whose GET /hang never returns: ?worker=N hangs only in worker N (SOCKACT_WORKER), answering at
once elsewhere."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any, Callable

FOREVER = threading.Event()  # never set


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    worker = os.environ.get("SOCKACT_WORKER", "-")
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
    if environ["PATH_INFO"] == "/hang" and query.get("worker", worker) == worker:
        FOREVER.wait()  # a handler that never returns: a lost lock, a remote call without a timeout
    body = f"worker {worker} pid {os.getpid()} {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
