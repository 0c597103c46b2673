"""An ASGI app that can block its own event loop: GET /block?s=N calls time.sleep(N) in the handler;
GET /wait?s=N awaits N seconds instead (long polling: the loop serves others meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

log = logging.getLogger("blocker")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if scope["path"] == "/block":
        time.sleep(float(query.get("s", "1")))  # noqa: ASYNC251 - deliberately blocks the loop
    elif scope["path"] == "/wait":
        await asyncio.sleep(float(query.get("s", "1")))
    elif scope["path"] == "/log":
        log.warning("a warning from worker %s", os.environ.get("SOCKACT_WORKER"))
        log.error("an error from worker %s", os.environ.get("SOCKACT_WORKER"))
    body = f"worker {os.environ.get('SOCKACT_WORKER', '-')} pid {os.getpid()}\n".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
