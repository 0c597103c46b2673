"""pytest plugin that runs uvicorn's own tests/protocols/test_http.py against sockact's ASGI protocol.

Loaded (-p uvicorn_peer_plugin) into a separate pytest run over the fetched uvicorn sdist in place of
uvicorn's conftest: it offers the fixtures test_http.py asks for, with `http_protocol_cls` bound to
sockact's protocol only, and deselects the tests that name uvicorn's own protocols (they test uvicorn).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState

from sockact.runtime.connection import BaseExchange, Exchange, HttpConnection, Site

# As uvicorn's conftest does: caplog sees only loggers that propagate.
LOGGING_CONFIG["loggers"]["uvicorn"]["propagate"] = True

TEST_TIMEOUT = 10  # seconds: a test that waits forever on sockact's protocol fails instead of hanging the run


class SockactHttpProtocol(HttpConnection):
    """sockact's HttpConnection behind uvicorn's protocol constructor.

    uvicorn's tests build a protocol as cls(config=, server_state=, app_state=, _loop=) and read a few
    attributes its own protocols have; those that mean the same thing in sockact are mapped here, the
    rest (uvicorn's keep-alive timer handle) are left missing so that the tests using them fail and are
    classified.
    """

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any] | None = None, _loop: Any = None
    ) -> None:
        if not config.loaded:
            config.load()
        site = Site(config, server_state, app_state if app_state is not None else {}, None, lambda: None)
        super().__init__(site)  # reads asyncio.get_running_loop(): the test's loop, replaced below
        if _loop is not None:
            self.loop = _loop  # uvicorn's MockLoop collects the tasks the protocol creates
        self._last_scope: dict[str, Any] | None = None

    def _serve(self, exchange: BaseExchange) -> None:
        # sockact keeps no scope on the connection once the response is complete; the tests read it after.
        # (Always an ASGI Exchange: the Site above has no WSGI pool.)
        if isinstance(exchange, Exchange):
            self._last_scope = exchange.scope
        super()._serve(exchange)

    @property
    def scope(self) -> dict[str, Any] | None:
        return self._last_scope

    @property
    def connections(self) -> set[Any]:
        return self.site.connections

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return self.site.tasks

    @property
    def ws_protocol_class(self) -> Any:
        return self.site.ws_protocol_class

    @ws_protocol_class.setter
    def ws_protocol_class(self, value: Any) -> None:
        self.site.ws_protocol_class = value


@pytest.fixture(params=[pytest.param(SockactHttpProtocol, id="sockact")])
def http_protocol_cls(request: pytest.FixtureRequest) -> type[SockactHttpProtocol]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(
    params=[
        pytest.param(
            "uvicorn.protocols.websockets.wsproto_impl:WSProtocol",
            id="wsproto",
            marks=pytest.mark.skipif(not importlib.util.find_spec("wsproto"), reason="wsproto not installed"),
        ),
        pytest.param(
            "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol", id="websockets-sansio"
        ),
    ]
)
def ws_protocol_cls(request: pytest.FixtureRequest) -> Any:
    return import_from_string(request.param)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only the tests parametrized by http_protocol_cls exercise sockact; the rest name uvicorn's protocols."""
    keep = [item for item in items if "http_protocol_cls" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


class _ToUvicornAccess(logging.Handler):
    """sockact's access log ("sockact.access", same line format as uvicorn's) handed to "uvicorn.access",
    the logger the tests capture: the lines themselves are sockact's."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("uvicorn.access").handle(record)


def pytest_configure(config: pytest.Config) -> None:
    access = logging.getLogger("sockact.access")
    access.setLevel(logging.INFO)
    access.propagate = False
    access.addHandler(_ToUvicornAccess())


class TestTimedOut(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise TestTimedOut(f"no result within {TEST_TIMEOUT} s (waiting forever on the protocol)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
