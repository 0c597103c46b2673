"""The WSGI app: GET / answers at once with the same body and X-Worker header as the ASGI app."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Callable

from .asgi import BODY

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def app(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
            ("X-Worker", str(os.getpid())),
        ],
    )
    return [BODY]
