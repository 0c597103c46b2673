"""An app whose memory grows on request, for --max-rss: ASGI `app` and WSGI `application`.

GET /grow?mb=N   -> keeps N MiB more referenced (written, so resident), then answers like /
GET /sleep?ms=N  -> waits N ms, then answers like /
GET /            -> "worker 2 pid 1234 held 0 MiB"
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import Any, Callable
from urllib.parse import parse_qs

HELD: list[bytearray] = []  # never released: a leak, as far as the worker can tell


def _answer(path: str, query: str) -> bytes:
    if path == "/grow":
        mb = int(parse_qs(query).get("mb", ["10"])[0])
        HELD.append(bytearray(b"\x01") * (mb * 1024 * 1024))  # every page written, so it counts in RSS
    held = sum(len(block) for block in HELD) // (1024 * 1024)
    return f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()} held {held} MiB\n".encode()


def _sleep_ms(path: str, query: str) -> float:
    return int(parse_qs(query).get("ms", ["10"])[0]) / 1000 if path == "/sleep" else 0.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan handling needed
    query = scope["query_string"].decode()
    delay = _sleep_ms(scope["path"], query)
    if delay:
        await asyncio.sleep(delay)
    body = _answer(scope["path"], query)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, query = environ.get("PATH_INFO", "/"), environ.get("QUERY_STRING", "")
    delay = _sleep_ms(path, query)
    if delay:
        time.sleep(delay)
    body = _answer(path, query)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
