"""Two hosts running sockact behind HAProxy: a rolling reload host by host, and a full stop/start of one
host, under load, lose no request. Each host is a private systemd in its own network namespace, linked
to a third one running HAProxy by a veth pair."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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

from sockact.testing import PrivateSystemd

NAME = "web"
HELLO = "sockact.examples.hello:app"
APP_PORT = 8000
LB_URL = "http://127.0.0.1:8080"
STATS_URL = "http://127.0.0.1:8404/stats"
CONFIG = "/run/haproxy/haproxy.cfg"
WORKERS = 2
PHASE_SECONDS = 10
LONG_REQUESTS, LONG_MS = 10, 2000

# Long requests through HAProxy, each on its own connection: its status, the host that answered, seconds.
LONG = textwrap.dedent('''
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
''')


@dataclass
class Cluster:
    lb: PrivateSystemd
    hosts: list[PrivateSystemd]
    backend: Backend
    log: Path  # HAProxy's request log, on this side

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
        self.lb.wait_for(lambda: self.status(server).startswith(prefix), timeout=30, interval=0.02,
                         what=f"HAProxy to see {server} {prefix}")


def _install(host: PrivateSystemd) -> None:
    host.run(sys.executable, "-m", "sockact", "install", NAME, "--app", HELLO, "--listen", str(APP_PORT),
             "--workers", str(WORKERS), "--python", sys.executable, "--unit-dir", "/run/systemd/system", "--now",
             timeout=120)


@pytest.fixture(scope="module")
def cluster(private_systemd: PrivateSystemd) -> Iterator[Cluster]:
    lb = private_systemd  # the load balancer's machine
    with PrivateSystemd() as host1, PrivateSystemd() as host2:
        hosts = [host1, host2]
        addresses = tuple(link(lb, host, index)[1] for index, host in enumerate(hosts, 1))
        for host in hosts:
            _install(host)
        # The health check is one parameter: GET / on the app's port until hosts have a readiness endpoint.
        backend = Backend(addresses=addresses, port=APP_PORT, check=HealthCheck(path="/", port=None))
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
    retried: Retried
    probe: ProbeResult

    def __str__(self) -> str:
        probe_max = max(float(taken) for _, _, taken, *_ in self.probe.results)  # type: ignore[arg-type]
        return (f"wrk: {self.wrk['requests']} requests, failed {failures(self.wrk)} ({self.wrk}), max latency "
                f"{self.max_latency * 1000:.0f} ms; HAProxy: 2xx per host (wrk and probe) {self.per_host}, "
                f"{self.connect_errors} connection errors and {self.response_errors} response errors met, "
                f"{self.retries} retries, {self.redispatches} redispatched, UP->DOWN {self.went_down}; requests "
                f"served by a second host: {self.retried.count} (served by {self.retried.hosts}), the slowest "
                f"{self.retried.slowest * 1000:.0f} ms; "
                f"probe (new connection every 0.1 s): {self.probe}, slowest {probe_max * 1000:.0f} ms")


def _delta(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]], server: str, field: str) -> int:
    return counter(after, server, field) - counter(before, server, field)


def under_load(cluster: Cluster, action: Callable[[], None]) -> Figures:
    """wrk (keep-alive, 8 connections) and a probe through HAProxy while `action` runs; the figures."""
    lb, names = cluster.lb, cluster.backend.names
    before, log_offset = cluster.stats(), cluster.log_size()
    load = lb.popen("wrk", "-t2", "-c8", f"-d{PHASE_SECONDS}s", "--latency", f"{LB_URL}/sleep?ms=10",
                    stdout=subprocess.PIPE, text=True)
    probe = Probe(lb, 8080, PHASE_SECONDS - 0.5)
    # The action starts once the load reaches both hosts.
    lb.wait_for(lambda: all(_delta(before, cluster.stats(), name, "hrsp_2xx") > 0 for name in names),
                timeout=5, what="load on both hosts")
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
        wrk=parse_wrk(out), max_latency=wrk_max_latency(out),
        per_host={name: _delta(before, after, name, "hrsp_2xx") for name in names},
        retries=total("wretr"), redispatches=total("wredis"), connect_errors=total("econ"),
        response_errors=total("eresp"), went_down={name: _delta(before, after, name, "chkdown") for name in names},
        retried=retried_requests(cluster.log_since(log_offset)), probe=probed,
    )


def test_rolling_reload_host_by_host_loses_no_request(cluster: Cluster) -> None:
    def deploy() -> None:
        for host in (1, 2):
            cluster.sockact(host, "reload", NAME)

    figures = under_load(cluster, deploy)
    print(f"\nrolling `sockact reload {NAME}` on host1 then host2 under load: {figures}")
    assert figures.wrk["requests"] > 200
    assert failures(figures.wrk) == 0, figures
    assert figures.probe.answered == figures.probe.total, figures.probe.failures()
    assert all(count > 0 for count in figures.per_host.values()), figures.per_host


def test_full_restart_of_one_host_loses_no_request(cluster: Cluster) -> None:
    marks: dict[str, float] = {}

    long: dict[str, list[tuple[int, str | None, float]]] = {}

    def restart_host1() -> None:
        # Long requests in flight on both hosts when host1 is told to stop.
        client = cluster.lb.popen(sys.executable, "-c", LONG, str(LONG_REQUESTS), str(LONG_MS),
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdout.readline().strip() == "sent"
        # HAProxy holds them all: wrk's 8 connections, the long ones, the stats request itself.
        cluster.lb.wait_for(lambda: counter(cluster.stats(), "FRONTEND", "scur") >= 8 + LONG_REQUESTS, timeout=5,
                            what="the long requests in HAProxy")
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
        long["results"] = [(status, host, seconds) for status, host, seconds in
                           json.loads(client.communicate(timeout=30)[0])]

    figures = under_load(cluster, restart_host1)
    served_since_up = counter(cluster.stats(), "host1", "hrsp_2xx") - marks.pop("host1_served_at_up")
    timeline = ", ".join(f"{what} at {at:.2f} s" for what, at in marks.items())
    answered = [status for status, *_ in long["results"]].count(200)
    on_host1 = [seconds for _, host, seconds in long["results"] if host == "host1"]
    print(f"\n`sockact stop {NAME}` + `sockact start {NAME}` on host1 under load ({timeline}; host1 served "
          f"{served_since_up} after HAProxy saw it up again): {figures}; {LONG_MS} ms requests in flight at the "
          f"stop: {answered} of {len(long['results'])} answered 200, {len(on_host1)} of them by host1 (slowest "
          f"{max(on_host1, default=0):.2f} s)")
    assert figures.went_down["host1"] == 1 and figures.went_down["host2"] == 0, figures.went_down
    assert failures(figures.wrk) == 0, figures
    assert figures.probe.answered == figures.probe.total, figures.probe.failures()
    assert served_since_up > 0
    assert answered == LONG_REQUESTS, long["results"]
    assert on_host1, long["results"]  # the stop really had requests of its own to drain


def test_the_health_check_target_is_one_parameter(tmp_path: Path) -> None:
    """The readiness endpoint to come (a path on a port of its own) changes the check lines only, and
    HAProxy accepts the result."""
    backend = Backend(addresses=("10.0.0.11", "10.0.0.12"), port=8000, check=HealthCheck(path="/ready", port=9000))
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy(backend, listen="127.0.0.1:8080", stats="127.0.0.1:8404"))
    checked = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    lines = config.read_text().splitlines()
    assert "    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host healthcheck" in lines
    assert [line for line in lines if line.startswith("    server ")] == [
        "    server host1 10.0.0.11:8000 check port 9000", "    server host2 10.0.0.12:8000 check port 9000"]
    today = render_haproxy(Backend(addresses=backend.addresses, port=8000), "127.0.0.1:8080", "127.0.0.1:8404")
    assert "uri / ver" in today and "    server host1 10.0.0.11:8000 check" in today.splitlines()
