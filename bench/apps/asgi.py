"""The ASGI app: GET / answers at once, GET /sleep awaits 10 ms first.

Every response carries the serving process's PID in X-Worker, so the load generator can count
requests per worker; the body is the same 13 bytes for every contender.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BODY = b"hello, world\n"
SLEEP_SECONDS = 0.010
_FIXED_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/sleep":
        await asyncio.sleep(SLEEP_SECONDS)
    # getpid() per request: servers that fork after import give each worker a PID of its own.
    headers = [*_FIXED_HEADERS, (b"x-worker", b"%d" % os.getpid())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
