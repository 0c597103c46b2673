"""An ASGI app whose lifespan startup takes STARTUP_SECONDS; READY=1 must wait for it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

STARTED_AT: list[float] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("STARTUP_SECONDS", "1")))
                STARTED_AT.append(time.time())
                print(f"startup complete at {STARTED_AT[0]:.6f}", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("shutdown complete", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": body})
