"""An app that says where it runs: GET / answers with the worker, the host name, the UID, whether
the root file system is read-only, and PID 1's command line (in a container, `sockact run` itself).

GET /sleep?ms=N waits N ms first. tests/images.py copies this module into the test image.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable
from typing import Any, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def where() -> dict[str, object]:
    try:
        with open("/proc/1/cmdline", "rb") as file:
            pid1 = file.read().decode(errors="replace").split("\0")[:-1]
    except OSError as exc:
        pid1 = [repr(exc)]
    return {
        "worker": os.environ.get("SOCKACT_WORKER", "-"),
        "hostname": socket.gethostname(),
        "uid": os.getuid(),
        "pid": os.getpid(),
        "read_only_root": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "pid1": pid1,
        "container": os.environ.get("container", ""),  # noqa: SIM112 - podman sets it lowercase
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/sleep":
        query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
        await asyncio.sleep(int(query.get("ms", "10")) / 1000)
    body = (json.dumps(where()) + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
