"""The demo app: answers with the worker instance and PID that served the request.

GET /            -> "worker 2 pid 1234"
GET /sleep?ms=N  -> waits N ms, then answers like /
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/sleep":
        query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
        await asyncio.sleep(int(query.get("ms", "10")) / 1000)
    body = f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
