"""A plain WSGI app: `sockact run wsgi_hello:application` serves it through the runtime's adapter."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"wsgi worker {os.environ.get('SOCKACT_WORKER', '-')} uid {os.getuid()} {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
