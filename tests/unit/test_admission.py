"""Admission: the loop's own accept loop on a dup of the shared socket, off while a worker is ahead.

Real listening sockets, real connections and real scoreboard files, on uvloop and on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import uvloop

from sockact.runtime.balance import PAUSE_AHEAD, SLOT, STALE, Scoreboard
from sockact.runtime.server import Admission

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


class Recorder(asyncio.Protocol):
    made: ClassVar[list[asyncio.BaseTransport]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Recorder.made.append(transport)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def run(loop_name: str, scenario: Callable[[], object]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


def made(count: int) -> Callable[[], bool]:
    """True once `count` connections were made."""
    return lambda: len(Recorder.made) == count


async def paused_by_its_lead(listener: socket.socket, board: Scoreboard, clients: list[socket.socket]) -> Admission:
    """An Admission that took PAUSE_AHEAD connections while its sibling took none, and so stopped accepting."""
    admission = Admission([listener], Recorder, board)
    await admission.open()
    # One at a time, so each accept is its own batch: the sibling (0 connections) stays idle.
    for n in range(1, PAUSE_AHEAD + 1):
        clients.append(socket.create_connection(listener.getsockname()))
        await until(made(n))
    await until(lambda: not admission.servers)  # PAUSE_AHEAD ahead: accepting is off
    return admission


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_worker_ahead_of_its_sibling_stops_accepting_until_the_sibling_catches_up(
    loop_name: str, listener: socket.socket, tmp_path: Path
) -> None:
    me, sibling = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    me.refresh()
    Recorder.made = []
    clients: list[socket.socket] = []

    async def scenario() -> None:
        admission = await paused_by_its_lead(listener, me, clients)
        assert me.count == PAUSE_AHEAD

        clients.append(socket.create_connection(listener.getsockname()))  # waits in the backlog
        await asyncio.sleep(0.2)
        admission.reconsider()
        await asyncio.sleep(0.1)
        assert len(Recorder.made) == PAUSE_AHEAD and not admission.servers

        sibling.heartbeat(PAUSE_AHEAD)  # the sibling caught up
        admission.reconsider()
        await until(lambda: len(Recorder.made) == PAUSE_AHEAD + 1)  # the waiting client is served
        assert admission.servers
        admission.close()
        assert not admission.servers

    try:
        run(loop_name, scenario)
    finally:
        for client in clients:
            client.close()
    # Pausing closed only dups: the inherited socket still listens for the siblings.
    late = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.close()
    late.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_paused_worker_looks_again_soon_without_waiting_for_the_tick(
    loop_name: str, listener: socket.socket, tmp_path: Path
) -> None:
    """No sibling stops accepting for a paused worker, so the paused one must not wait for the
    server's tick to take its share again: here no tick runs at all."""
    me, sibling = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    me.refresh()
    Recorder.made = []
    clients: list[socket.socket] = []

    async def scenario() -> None:
        admission = await paused_by_its_lead(listener, me, clients)
        clients.append(socket.create_connection(listener.getsockname()))  # waits in the backlog
        sibling.heartbeat(PAUSE_AHEAD)  # the sibling caught up; nobody calls reconsider()
        await until(lambda: len(Recorder.made) == PAUSE_AHEAD + 1, timeout=1.0)
        admission.close()

    try:
        run(loop_name, scenario)
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_without_siblings_a_worker_never_pauses(loop_name: str, listener: socket.socket, tmp_path: Path) -> None:
    alone = Scoreboard("app", "1", str(tmp_path))
    Recorder.made = []
    clients: list[socket.socket] = []

    async def scenario() -> None:
        admission = Admission([listener], Recorder, alone)
        await admission.open()
        clients.extend(socket.create_connection(listener.getsockname()) for _ in range(3 * PAUSE_AHEAD))
        await until(lambda: len(Recorder.made) == 3 * PAUSE_AHEAD)
        admission.reconsider()
        assert admission.servers and alone.count == 3 * PAUSE_AHEAD
        admission.close()

    try:
        run(loop_name, scenario)
    finally:
        for client in clients:
            client.close()


def test_a_stale_sibling_does_not_hold_accepting_off(listener: socket.socket, tmp_path: Path) -> None:
    me, hung = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    me.refresh()
    me.heartbeat(10)

    SLOT.pack_into(hung.own, 0, 0, time.monotonic() - 2 * STALE, 0)  # no heartbeat for 2 s: hung or dead
    Recorder.made = []

    async def scenario() -> None:
        admission = Admission([listener], Recorder, me)
        await admission.open()
        admission.reconsider()
        client = socket.create_connection(listener.getsockname())
        try:
            await until(lambda: len(Recorder.made) == 1)
        finally:
            client.close()
        admission.close()

    run("uvloop", scenario)
