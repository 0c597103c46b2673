"""The FastAPI app: GET / returns a small JSON object from a typed `async def` endpoint, as the FastAPI
tutorial writes one; the serving PID goes out in X-Worker, as in the hello apps."""

from __future__ import annotations

import os

from fastapi import FastAPI, Response

from .payload import PAYLOAD

app = FastAPI()


@app.get("/")
async def hello(response: Response) -> dict[str, str]:
    response.headers["x-worker"] = str(os.getpid())
    return PAYLOAD
