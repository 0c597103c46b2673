"""Two hosts running sockact behind HAProxy: a rolling reload host by host, and a full stop/start of one
host, under load, lose no request; checked on the app's port with retries of connections closed
unanswered, and checked on /ready (--health-listen, --drain-delay) with retries of refused connections
only. Each host is a private systemd in its own network namespace, linked to a third one running
HAProxy by a veth pair."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from boxutil import Probe, ProbeResult, failures, parse_wrk
from lbutil import (
    Backend,
    HealthCheck,
    Retried,
    counter,
    haproxy_stats,
    link,
    render_haproxy,
    retried_requests,
    wrk_max_latency,
)

from sockact.box import PrivateSystemd

NAME = "web"
HELLO = "sockact.examples.hello:app"
APP_PORT = 8000
HEALTH_PORT = 9000
# Longer than HAProxy's time to mark a host down once /ready says 503: fall (2) checks, inter (200 ms)
# apart, each with a timeout of inter: 0.6 s; the rest is a margin for 2 shared cores.
DRAIN_DELAY = 1.0
LB_URL = "http://127.0.0.1:8080"
STATS_URL = "http://127.0.0.1:8404/stats"
CONFIG = "/run/haproxy/haproxy.cfg"
WORKERS = 2
PHASE_SECONDS = 10
LONG_REQUESTS, LONG_MS = 10, 2000

# Long requests through HAProxy, each on its own connection: its status, the host that answered, seconds.
LONG = textwrap.dedent("""
    import http.client, json, sys, threading, time
    count, ms = int(sys.argv[1]), int(sys.argv[2])
    results, lock = [], threading.Lock()
    def one(conn):
        began = time.monotonic()
        try:
            response = conn.getresponse()
            response.read()
            result = [response.status, response.getheader("X-Served-By"), round(time.monotonic() - began, 3)]
        except Exception as exc:
            result = [0, repr(exc), round(time.monotonic() - began, 3)]
        with lock:
            results.append(result)
    conns = [http.client.HTTPConnection("127.0.0.1", 8080, timeout=30) for _ in range(count)]
    for conn in conns:
        conn.request("GET", f"/sleep?ms={ms}")
    threads = [threading.Thread(target=one, args=(conn,)) for conn in conns]
    [thread.start() for thread in threads]
    print("sent", flush=True)
    [thread.join() for thread in threads]
    print(json.dumps(results), flush=True)
""")


@dataclass
class Cluster:
    lb: PrivateSystemd
    hosts: list[PrivateSystemd]
    backend: Backend
    log: Path  # HAProxy's request log, on this side
    measured: dict[str, object] = field(default_factory=dict)  # figures shared by tests of one cluster

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open() as file:
            file.seek(offset)
            return file.read()

    def sockact(self, host: int, *args: str) -> str:
        """The CLI on host N (1-based), as its operator would run it there."""
        return self.hosts[host - 1].run(sys.executable, "-m", "sockact", *args, timeout=120).stdout

    def stats(self) -> dict[str, dict[str, str]]:
        return haproxy_stats(self.lb, STATS_URL)

    def status(self, server: str) -> str:
        return self.stats()[server]["status"]

    def wait_status(self, server: str, prefix: str) -> None:
        self.lb.wait_for(
            lambda: self.status(server).startswith(prefix),
            timeout=30,
            interval=0.02,
            what=f"HAProxy to see {server} {prefix}",
        )


def _install(host: PrivateSystemd, *options: str) -> None:
    host.run(
        sys.executable,
        "-m",
        "sockact",
        "install",
        NAME,
        "--app",
        HELLO,
        "--listen",
        str(APP_PORT),
        "--workers",
        str(WORKERS),
        "--python",
        sys.executable,
        "--unit-dir",
        "/run/systemd/system",
        "--now",
        *options,
        timeout=120,
    )


@contextmanager
def _cluster(lb: PrivateSystemd, check: HealthCheck, retry_on: str, *options: str) -> Iterator[Cluster]:
    """Two hosts installed with `options`, HAProxy in `lb` checking `check` and retrying on `retry_on`."""
    with PrivateSystemd() as host1, PrivateSystemd() as host2:
        hosts = [host1, host2]
        addresses = tuple(link(lb, host, index)[1] for index, host in enumerate(hosts, 1))
        for host in hosts:
            _install(host, *options)
        backend = Backend(addresses=addresses, port=APP_PORT, check=check, retry_on=retry_on)
        config = lb.path(CONFIG)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(render_haproxy(backend, listen="127.0.0.1:8080", stats="127.0.0.1:8404"))
        lb.run("haproxy", "-c", "-q", "-f", CONFIG)
        log = config.with_name("requests.log").open("w")
        haproxy = lb.popen("haproxy", "-db", "-f", CONFIG, stdout=subprocess.DEVNULL, stderr=log)
        try:
            built = Cluster(lb, hosts, backend, config.with_name("requests.log"))
            lb.wait_for(lambda: _stats_up(built), timeout=30, what="HAProxy's stats page")
            for server in backend.names:
                built.wait_status(server, "UP")
            yield built
        finally:
            haproxy.terminate()
            haproxy.communicate(timeout=20)
            log.close()


@pytest.fixture(scope="module")
def cluster(private_systemd: PrivateSystemd) -> Iterator[Cluster]:
    """Checks on GET / on the app's port; connections closed unanswered are sent again."""
    with _cluster(private_systemd, HealthCheck(path="/", port=None), "conn-failure empty-response") as built:
        yield built


@pytest.fixture(scope="module")
def ready_cluster() -> Iterator[Cluster]:
    """Checks on GET /ready on the health port; only refused connections are sent again."""
    with (
        PrivateSystemd() as lb,
        _cluster(
            lb,
            HealthCheck(path="/ready", port=HEALTH_PORT),
            "conn-failure",
            "--health-listen",
            str(HEALTH_PORT),
            "--drain-delay",
            f"{DRAIN_DELAY:g}",
        ) as built,
    ):
        yield built


def _stats_up(cluster: Cluster) -> bool:
    try:
        cluster.stats()
    except Exception:  # noqa: BLE001 - not listening yet
        return False
    return True


@dataclass
class Figures:
    wrk: dict[str, int]
    max_latency: float
    per_host: dict[str, int]
    retries: int
    redispatches: int
    connect_errors: int
    response_errors: int
    went_down: dict[str, int]
    checks_failed: dict[str, int]
    retried: Retried
    probe: ProbeResult

    def __str__(self) -> str:
        probe_max = max(float(taken) for _, _, taken, *_ in self.probe.results)
        return (
            f"wrk: {self.wrk['requests']} requests, failed {failures(self.wrk)} ({self.wrk}), max latency "
            f"{self.max_latency * 1000:.0f} ms; HAProxy: 2xx per host (wrk and probe) {self.per_host}, "
            f"{self.connect_errors} connection errors and {self.response_errors} response errors met, "
            f"{self.retries} retries, {self.redispatches} redispatched, UP->DOWN {self.went_down}, failed checks "
            f"{self.checks_failed}; requests "
            f"served by a second host: {self.retried.count} (served by {self.retried.hosts}), the slowest "
            f"{self.retried.slowest * 1000:.0f} ms; "
            f"probe (new connection every 0.1 s): {self.probe}, slowest {probe_max * 1000:.0f} ms"
        )


def _delta(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]], server: str, field: str) -> int:
    return counter(after, server, field) - counter(before, server, field)


def under_load(cluster: Cluster, action: Callable[[], None]) -> Figures:
    """wrk (keep-alive, 8 connections) and a probe through HAProxy while `action` runs; the figures."""
    lb, names = cluster.lb, cluster.backend.names
    before, log_offset = cluster.stats(), cluster.log_size()
    load = lb.popen(
        "wrk",
        "-t2",
        "-c8",
        f"-d{PHASE_SECONDS}s",
        "--latency",
        f"{LB_URL}/sleep?ms=10",
        stdout=subprocess.PIPE,
        text=True,
    )
    probe = Probe(lb, 8080, PHASE_SECONDS - 0.5)
    # The action starts once the load reaches both hosts.
    lb.wait_for(
        lambda: all(_delta(before, cluster.stats(), name, "hrsp_2xx") > 0 for name in names),
        timeout=5,
        what="load on both hosts",
    )
    began = time.monotonic()
    action()
    took = time.monotonic() - began
    out, _ = load.communicate(timeout=60)
    assert load.returncode == 0, out
    probed = probe.result()
    after = cluster.stats()
    assert took < PHASE_SECONDS - 1, f"the action took {took:.1f} s, longer than the load"

    def total(field: str) -> int:
        return sum(_delta(before, after, name, field) for name in names)

    return Figures(
        wrk=parse_wrk(out),
        max_latency=wrk_max_latency(out),
        per_host={name: _delta(before, after, name, "hrsp_2xx") for name in names},
        retries=total("wretr"),
        redispatches=total("wredis"),
        connect_errors=total("econ"),
        response_errors=total("eresp"),
        went_down={name: _delta(before, after, name, "chkdown") for name in names},
        checks_failed={name: _delta(before, after, name, "chkfail") for name in names},
        retried=retried_requests(cluster.log_since(log_offset)),
        probe=probed,
    )


def rolling_reload(cluster: Cluster) -> Figures:
    def deploy() -> None:
        for host in (1, 2):
            cluster.sockact(host, "reload", NAME)

    return under_load(cluster, deploy)


def test_rolling_reload_host_by_host_loses_no_request(cluster: Cluster) -> None:
    figures = rolling_reload(cluster)
    print(f"\nrolling `sockact reload {NAME}` on host1 then host2 under load: {figures}")
    assert figures.wrk["requests"] > 200
    assert failures(figures.wrk) == 0, figures
    assert figures.probe.answered == figures.probe.total, figures.probe.failures()
    assert all(count > 0 for count in figures.per_host.values()), figures.per_host


def test_rolling_reload_with_checks_on_ready_never_marks_a_host_down(ready_cluster: Cluster) -> None:
    """Each host's /ready stays 200 while its workers restart one by one: the leaving or starting worker
    that takes a check answers for its sibling, so HAProxy never takes a host out during a deploy."""
    log_offset = ready_cluster.log_size()
    figures = rolling_reload(ready_cluster)
    marked_down = [line for line in ready_cluster.log_since(log_offset).splitlines() if " is DOWN" in line]
    print(
        f"\nrolling `sockact reload {NAME}` on host1 then host2 under load, HAProxy checking /ready: {figures}; "
        f"'is DOWN' lines in HAProxy's log: {len(marked_down)}"
    )
    assert figures.went_down == {"host1": 0, "host2": 0} and not marked_down, (figures.went_down, marked_down)
    assert figures.wrk["requests"] > 200
    assert failures(figures.wrk) == 0, figures
    assert figures.probe.answered == figures.probe.total, figures.probe.failures()
    assert all(count > 0 for count in figures.per_host.values()), figures.per_host


@dataclass
class StopStart:
    figures: Figures
    marks: dict[str, float]  # seconds from the stop: marked_down, stopped, started, marked_up
    served_since_up: int  # by host1, after HAProxy saw it up again
    long: list[list[Any]]  # [status, host, seconds] of the long requests in flight at the stop

    def __str__(self) -> str:
        timeline = ", ".join(f"{what} at {at:.2f} s" for what, at in self.marks.items())
        answered = [status for status, *_ in self.long].count(200)
        on_host1 = [seconds for _, host, seconds in self.long if host == "host1"]
        return (
            f"{timeline}; host1 served {self.served_since_up} after HAProxy saw it up again; {self.figures}; "
            f"{LONG_MS} ms requests in flight at the stop: {answered} of {len(self.long)} answered 200, "
            f"{len(on_host1)} of them by host1 (slowest {max(on_host1, default=0):.2f} s)"
        )


def stop_start_host1(cluster: Cluster) -> StopStart:
    """`sockact stop` + `sockact start` on host1 under load, with long requests in flight on both hosts;
    measured once per cluster."""
    if "stop_start" in cluster.measured:
        return cluster.measured["stop_start"]  # type: ignore[return-value]
    marks: dict[str, float] = {}
    long: dict[str, list[list[Any]]] = {}

    def restart_host1() -> None:
        # Long requests in flight on both hosts when host1 is told to stop.
        client = cluster.lb.popen(
            sys.executable, "-c", LONG, str(LONG_REQUESTS), str(LONG_MS), stdout=subprocess.PIPE, text=True
        )
        assert client.stdout is not None and client.stdout.readline().strip() == "sent"
        # HAProxy holds them all: wrk's 8 connections, the long ones, the stats request itself.
        cluster.lb.wait_for(
            lambda: counter(cluster.stats(), "FRONTEND", "scur") >= 8 + LONG_REQUESTS,
            timeout=5,
            what="the long requests in HAProxy",
        )
        began = time.monotonic()
        # Workers drain (the long requests finish), then the socket closes: the port is closed.
        stop = cluster.hosts[0].popen(sys.executable, "-m", "sockact", "stop", NAME, stdout=subprocess.DEVNULL)
        cluster.wait_status("host1", "DOWN")
        marks["marked_down"] = time.monotonic() - began
        assert stop.wait(timeout=30) == 0
        marks["stopped"] = time.monotonic() - began
        cluster.sockact(1, "start", NAME)
        marks["started"] = time.monotonic() - began
        cluster.wait_status("host1", "UP")
        marks["marked_up"] = time.monotonic() - began
        marks["host1_served_at_up"] = counter(cluster.stats(), "host1", "hrsp_2xx")
        # [status, X-Served-By, seconds] per request; status 0 and the error's repr for a failed one
        long["results"] = [
            [status, host, seconds] for status, host, seconds in json.loads(client.communicate(timeout=30)[0])
        ]

    figures = under_load(cluster, restart_host1)
    served_since_up = counter(cluster.stats(), "host1", "hrsp_2xx") - int(marks.pop("host1_served_at_up"))
    measured = StopStart(figures, marks, served_since_up, long["results"])
    cluster.measured["stop_start"] = measured
    return measured


def assert_lossless(measured: StopStart) -> None:
    figures = measured.figures
    assert figures.went_down["host1"] == 1 and figures.went_down["host2"] == 0, figures.went_down
    assert failures(figures.wrk) == 0, figures
    assert figures.probe.answered == figures.probe.total, figures.probe.failures()
    assert measured.served_since_up > 0
    assert [status for status, *_ in measured.long] == [200] * LONG_REQUESTS, measured.long
    assert any(host == "host1" for _, host, _ in measured.long), measured.long  # the stop had requests to drain


def test_full_restart_of_one_host_loses_no_request(cluster: Cluster) -> None:
    measured = stop_start_host1(cluster)
    print(
        f"\n`sockact stop {NAME}` + `sockact start {NAME}` on host1 under load, checks on GET /, retry-on "
        f"conn-failure empty-response: {measured}"
    )
    assert_lossless(measured)


def test_checks_on_ready_with_a_drain_delay_strand_nothing_at_a_stop(cluster: Cluster, ready_cluster: Cluster) -> None:
    """With /ready checked and --drain-delay longer than HAProxy's time to mark a host down, the stopping
    host is out before it stops accepting: nothing is stranded in its backlog, so nothing needs sending
    again (retry-on conn-failure alone) and no request waits for the drain."""
    old, new = stop_start_host1(cluster), stop_start_host1(ready_cluster)
    print(
        f"\n`sockact stop {NAME}` + `sockact start {NAME}` on host1 under load, checks on /ready with --drain-delay "
        f"{DRAIN_DELAY:g}, retry-on conn-failure: {new}"
    )
    rows = [
        (
            "",
            "GET / on the app port, retry-on conn-failure empty-response",
            f"/ready, --drain-delay {DRAIN_DELAY:g}, retry-on conn-failure",
        ),
        ("failed (wrk)", failures(old.figures.wrk), failures(new.figures.wrk)),
        ("requests (wrk)", old.figures.wrk["requests"], new.figures.wrk["requests"]),
        ("redispatched", old.figures.retried.count, new.figures.retried.count),
        ("max latency (wrk)", f"{old.figures.max_latency * 1000:.0f} ms", f"{new.figures.max_latency * 1000:.0f} ms"),
        (
            "probes answered",
            f"{old.figures.probe.answered} of {old.figures.probe.total}",
            f"{new.figures.probe.answered} of {new.figures.probe.total}",
        ),
        ("marked down after", f"{old.marks['marked_down']:.2f} s", f"{new.marks['marked_down']:.2f} s"),
        ("stop took", f"{old.marks['stopped']:.2f} s", f"{new.marks['stopped']:.2f} s"),
    ]
    print("\n".join(f"  {what:<20} {before!s:<62} {after}" for what, before, after in rows))
    assert_lossless(new)
    # Nothing stranded: at most a request or two racing the check (the old way strands one per open
    # connection, 9 here), and no request waits for the 2 s drain of the long ones.
    assert new.figures.retried.count <= 2 and new.figures.retried.count < old.figures.retried.count, rows
    assert new.figures.max_latency < LONG_MS / 1000 / 2, rows
    assert new.figures.max_latency < old.figures.max_latency / 2, rows


def test_the_health_check_target_is_one_parameter(tmp_path: Path) -> None:
    """The readiness endpoint (a path on a port of its own) changes the check lines only, and HAProxy
    accepts the result."""
    backend = Backend(addresses=("10.0.0.11", "10.0.0.12"), port=8000, check=HealthCheck(path="/ready", port=9000))
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy(backend, listen="127.0.0.1:8080", stats="127.0.0.1:8404"))
    checked = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    lines = config.read_text().splitlines()
    assert "    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host healthcheck" in lines
    assert [line for line in lines if line.startswith("    server ")] == [
        "    server host1 10.0.0.11:8000 check port 9000",
        "    server host2 10.0.0.12:8000 check port 9000",
    ]
    today = render_haproxy(Backend(addresses=backend.addresses, port=8000), "127.0.0.1:8080", "127.0.0.1:8404")
    assert "uri / ver" in today and "    server host1 10.0.0.11:8000 check" in today.splitlines()
