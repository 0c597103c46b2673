"""Which protocol an app speaks (ASGI 3, ASGI 2 or WSGI), and the adapter that serves WSGI."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from ..errors import RuntimeFailure

INTERFACES = ("auto", "asgi3", "asgi2", "wsgi")


def detect(app: Any) -> str:
    """ASGI 3 is `async def app(scope, receive, send)`; WSGI is a plain `app(environ, start_response)`."""
    if inspect.isclass(app):
        return "asgi2" if not hasattr(app, "__await__") else "asgi3"
    call = app if inspect.isroutine(app) else getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    if call is None:
        raise RuntimeFailure(f"{app!r} is not callable; --app must name an ASGI or WSGI application object")
    if asyncio.iscoroutinefunction(call):
        return "asgi3"
    positional = _positional_count(call)
    if positional == 2:
        return "wsgi"
    if positional == 3:
        return "asgi3"  # a sync callable returning an awaitable, e.g. a wrapped ASGI app
    if positional == 1:
        return "asgi2"
    raise RuntimeFailure(f"cannot tell whether {app!r} is ASGI or WSGI; pass --interface asgi3 or --interface wsgi")


def _positional_count(call: Any) -> int | None:
    try:
        params = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds)
