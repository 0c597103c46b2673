"""scale and reload on a real (private) systemd, and zero failed requests under wrk load while workers restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from boxutil import parse_wrk
from test_ops_commands import active_count, install, pid_of, sockact_in, status_of, wake

from sockact.box import PrivateSystemd

# systemd's catalog ids for the job messages that bracket an instance's downtime.
STOPPING = "de5b426a63be47a7b6ac3eaac82e2f6f"
STARTED = "39f53479d3a045ac8e11786248231fbf"
WRK_SECONDS = 5


def wanted_line(box: PrivateSystemd, name: str) -> str:
    return next(
        line for line in (box.unit_dir() / f"{name}.target").read_text().splitlines() if line.startswith("Wants=")
    )


def instances(name: str, count: int) -> str:
    return " ".join(f"{name}@{i}.service" for i in range(1, count + 1))


# --- scale -----------------------------------------------------------------------------------------


def test_scale_is_live_and_survives_a_target_restart(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install(box, "sc", 8401, 2, "--now")
    wake(box, "sc", 8401, 2)
    first = pid_of(box, "sc@1.service")

    assert "2 -> 3 workers" in sockact_in(box, "scale", "sc", "3").stdout
    assert active_count(box, "sc", 3) == 3  # scale returns once the new worker is ready
    assert wanted_line(box, "sc") == f"Wants={instances('sc', 3)}"
    box.systemctl("restart", "sc.target")
    box.wait_for(lambda: active_count(box, "sc", 3) == 3, what="3 workers after restarting sc.target")

    first = pid_of(box, "sc@1.service")
    out = sockact_in(box, "scale", "sc", "1").stdout
    assert "stopped sc@2.service sc@3.service" in out
    assert [box.show(f"sc@{i}.service", "ActiveState")["ActiveState"] for i in (2, 3)] == ["inactive"] * 2
    assert pid_of(box, "sc@1.service") == first  # the kept worker was not touched
    assert [worker["unit"] for worker in status_of(box, "sc")["workers"]] == ["sc@1.service"]

    cpus = len(os.sched_getaffinity(0))
    sockact_in(box, "scale", "sc", "auto")
    assert active_count(box, "sc", cpus) == cpus and wanted_line(box, "sc") == f"Wants={instances('sc', cpus)}"


def test_scale_of_an_idle_app_only_persists(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install(box, "idle", 8402, 2)
    box.systemctl("start", "idle.socket")  # listening, no worker started yet
    out = sockact_in(box, "scale", "idle", "3").stdout
    assert "no worker runs now" in out
    assert active_count(box, "idle", 3) == 0
    assert wanted_line(box, "idle") == f"Wants={instances('idle', 3)}"
    wake(box, "idle", 8402, 3)  # the first connection starts the persisted count


# --- reload ----------------------------------------------------------------------------------------


def downtime_overlap(records: list[dict[str, str]], name: str) -> tuple[int, list[str]]:
    """The most instances down at once (from Stopping to Started), and the order they were restarted in."""
    down: set[str] = set()
    most, order = 0, []
    for record in records:
        unit = record.get("UNIT", "")
        if not unit.startswith(f"{name}@"):
            continue
        if record.get("MESSAGE_ID") == STOPPING:
            down.add(unit)
            order.append(unit)
            most = max(most, len(down))
        elif record.get("MESSAGE_ID") == STARTED:
            down.discard(unit)
    return most, order


def journal_cursor(box: PrivateSystemd) -> str:
    cursors: list[str] = re.findall(r"cursor: (\S+)", box.journal("-n", "0", "--show-cursor"))
    return cursors[-1]


def test_reload_restarts_one_worker_at_a_time(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install(box, "roll", 8403, 3, "--now")
    wake(box, "roll", 8403, 3)
    before = [pid_of(box, f"roll@{i}.service") for i in (1, 2, 3)]
    cursor = journal_cursor(box)
    out = sockact_in(box, "reload", "roll").stdout
    assert "reloaded 3 workers" in out
    after = [pid_of(box, f"roll@{i}.service") for i in (1, 2, 3)]
    assert active_count(box, "roll", 3) == 3 and not set(before) & set(after)
    records = [json.loads(line) for line in box.journal("--after-cursor", cursor, "-o", "json").splitlines()]
    most, order = downtime_overlap(records, "roll")
    assert most == 1, "more than one worker was down at once"
    assert order == ["roll@1.service", "roll@2.service", "roll@3.service"]


def test_reload_with_one_worker_says_it_cannot_be_gapless(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install(box, "solo", 8404, 1, "--now")
    wake(box, "solo", 8404, 1)
    before = pid_of(box, "solo@1.service")
    result = sockact_in(box, "reload", "solo")
    assert "cannot be gapless" in result.stderr and "socket backlog" in result.stderr
    assert pid_of(box, "solo@1.service") != before


FLAKY = textwrap.dedent("""
    VERSION = "{version}"

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({{"type": "lifespan.startup.complete"}})
                else:
                    await send({{"type": "lifespan.shutdown.complete"}})
                    return
        body = VERSION.encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]}})
        await send({{"type": "http.response.body", "body": body}})
    {tail}
""")


def test_reload_stops_at_a_worker_that_does_not_become_ready(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    code = box.path("/run/sockact-flaky/flaky.py")
    code.parent.mkdir(parents=True, exist_ok=True)
    code.write_text(FLAKY.format(version="v1", tail=""))
    install(box, "flaky", 8405, 2, "--now", "--chdir", "/run/sockact-flaky", "--app", "flaky:app")
    wake(box, "flaky", 8405, 2)
    old = pid_of(box, "flaky@2.service")

    code.write_text(FLAKY.format(version="v2", tail='raise RuntimeError("bad deploy: DATABASE_URL missing")'))
    failed = sockact_in(box, "reload", "flaky", check=False)
    assert failed.returncode == 1
    assert "cannot import flaky: RuntimeError: bad deploy: DATABASE_URL missing" in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(
        "sockact: reload of flaky stopped at flaky@1.service, which did not become ready; "
        "flaky@2.service still run the old code"
    )
    assert pid_of(box, "flaky@2.service") == old
    answers = {box.run("curl", "-sS", "--fail", "http://127.0.0.1:8405/").stdout for _ in range(10)}
    assert answers == {"v1"}

    code.write_text(FLAKY.format(version="v2", tail=""))
    sockact_in(box, "reload", "flaky")
    box.wait_for(lambda: active_count(box, "flaky", 2) == 2, what="both flaky workers on the fixed code")
    answers = {box.run("curl", "-sS", "--fail", "http://127.0.0.1:8405/").stdout for _ in range(10)}
    assert answers == {"v2"}


# --- under load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    connect: int
    read: int
    write: int
    timeout: int
    non_2xx: int

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        stats = parse_wrk(output)
        return cls(
            stats["requests"], stats["connect"], stats["read"], stats["write"], stats["timeout"], stats["non2xx"]
        )

    @property
    def failed(self) -> int:
        return self.connect + self.read + self.write + self.timeout + self.non_2xx

    def describe(self) -> str:
        return (
            f"{self.requests} requests; socket errors: connect {self.connect}, read {self.read}, "
            f"write {self.write}, timeout {self.timeout}; non-2xx {self.non_2xx}"
        )


def under_load(box: PrivateSystemd, port: int, keep_alive: bool, action: Callable[[], object]) -> WrkResult:
    """Run action while wrk loads the port; action must finish while wrk still runs."""
    close = [] if keep_alive else ["-H", "Connection: close"]
    wrk = box.popen(
        "wrk",
        "-t2",
        "-c16",
        f"-d{WRK_SECONDS}s",
        *close,
        f"http://127.0.0.1:{port}/sleep?ms=2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        established = ("ss", "-tnH", "state", "established", f"( sport = :{port} )")
        box.wait_for(lambda: box.run(*established).stdout.strip() != "", what="wrk's connections")
        loaded = time.monotonic()
        action()
        took = time.monotonic() - loaded
        assert wrk.poll() is None, f"the action took {took:.1f} s, outlasting the load:\n{_drain_waits(box, took)}"
        out, err = wrk.communicate(timeout=WRK_SECONDS + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    assert wrk.returncode == 0, err
    return WrkResult.parse(out)


def _drain_waits(box: PrivateSystemd, seconds: float) -> str:
    """The workers' shutdown lines of the last moments: a stop that waits on open connections says so."""
    lines = box.journal("-u", "load@*", "--since", f"-{int(seconds) + 5}s", "-o", "short-precise").splitlines()
    return "\n".join(
        line
        for line in lines
        if "Shutting down" in line or "connections to close" in line or "Stopping" in line or "Stopped" in line
    )


@pytest.fixture(scope="module")
def loaded_app(private_systemd: PrivateSystemd) -> Iterator[int]:
    port = 8406
    install(private_systemd, "load", port, 2, "--now")
    wake(private_systemd, "load", port, 2)
    yield port


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "connection-close"])
def test_reload_under_load_fails_no_request(private_systemd: PrivateSystemd, loaded_app: int, keep_alive: bool) -> None:
    box = private_systemd
    before = {pid_of(box, "load@1.service"), pid_of(box, "load@2.service")}
    result = under_load(box, loaded_app, keep_alive, lambda: sockact_in(box, "reload", "load"))
    print(f"\nsockact reload under wrk ({'keep-alive' if keep_alive else 'Connection: close'}): {result.describe()}")
    assert not before & {pid_of(box, "load@1.service"), pid_of(box, "load@2.service")}
    assert result.requests > 500 and result.failed == 0, result.describe()


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "connection-close"])
def test_target_restart_under_load_fails_no_request(
    private_systemd: PrivateSystemd, loaded_app: int, keep_alive: bool
) -> None:
    box = private_systemd
    before = {pid_of(box, "load@1.service"), pid_of(box, "load@2.service")}
    result = under_load(box, loaded_app, keep_alive, lambda: box.systemctl("restart", "load.target"))
    print(
        f"\nsystemctl restart load.target under wrk ({'keep-alive' if keep_alive else 'Connection: close'}): "
        f"{result.describe()}"
    )
    assert not before & {pid_of(box, "load@1.service"), pid_of(box, "load@2.service")}
    assert result.requests > 500 and result.failed == 0, result.describe()
