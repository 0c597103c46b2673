"""The demo app as WSGI: answers with the worker instance and PID that served the request."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Callable
from urllib.parse import parse_qs


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/sleep":
        time.sleep(int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["10"])[0]) / 1000)
    body = f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
