"""Hosts behind a load balancer, simulated with private systemd boxes: veth links, HAProxy's config, stats and log."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from dataclasses import dataclass

from sockact.box import PrivateSystemd

# Each box has a network namespace of its own, so these addresses and names exist only inside the
# boxes: parallel runs cannot clash, and the links vanish with the boxes.
LB_ADDRESS = "10.77.{index}.1"
HOST_ADDRESS = "10.77.{index}.2"


@dataclass(frozen=True)
class HealthCheck:
    """What HAProxy asks each host to decide whether it takes traffic: GET `path` on `port`
    (None: the app's own port) of the host's address."""

    path: str = "/"
    port: int | None = None


@dataclass(frozen=True)
class Backend:
    """One server line per host, all serving the app on the same port."""

    addresses: tuple[str, ...]
    port: int
    check: HealthCheck = HealthCheck()
    inter_ms: int = 200
    fall: int = 2
    rise: int = 2
    retries: int = 3
    # What HAProxy sends again to another host; "conn-failure" alone is HAProxy's default.
    retry_on: str = "conn-failure empty-response"

    @property
    def names(self) -> list[str]:
        return [f"host{i}" for i in range(1, len(self.addresses) + 1)]


def render_haproxy(backend: Backend, listen: str, stats: str) -> str:
    """haproxy.cfg: a frontend on `listen`, the hosts as one backend with active HTTP checks, L7
    retries that go to another host, and a CSV stats page on `stats`."""
    inter = f"{backend.inter_ms}ms"
    timing = f"inter {inter} fastinter {inter} downinter {inter} fall {backend.fall} rise {backend.rise}"
    check_port = f" port {backend.check.port}" if backend.check.port is not None else ""
    servers = "\n".join(
        f"    server {name} {address}:{backend.port} check{check_port}"
        for name, address in zip(backend.names, backend.addresses)
    )
    return f"""\
global
    maxconn 4096
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    # The client's address for the app (sockact --forwarded-allow-ips trusts it from this proxy only).
    option forwardfor
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    # A request that met a refused connection or a connection closed before any answer (a host whose
    # socket closed with requests in its backlog) goes again, to another host each time.
    retries {backend.retries}
    option redispatch 1
    retry-on {backend.retry_on}

frontend web
    bind {listen}
    default_backend app
    # Which host answered: for tests and for debugging a deploy.
    http-response set-header X-Served-By %s

backend app
    balance roundrobin
    option httpchk
    http-check send meth GET uri {backend.check.path} ver HTTP/1.1 hdr Host healthcheck
    http-check expect status 200
    default-server {timing}
{servers}

listen stats
    bind {stats}
    stats enable
    stats uri /stats
    stats refresh 0
"""


def link(lb: PrivateSystemd, host: PrivateSystemd, index: int) -> tuple[str, str]:
    """A veth pair from the load balancer's namespace to a host's: (lb address, host address), /24 each."""
    lb_side, host_side = f"lb{index}", f"up{index}"
    # Created straight inside the two namespaces: the names never exist in the machine's own.
    command = [
        "ip",
        "link",
        "add",
        "name",
        lb_side,
        "netns",
        str(lb.pid),
        "type",
        "veth",
        "peer",
        "name",
        host_side,
        "netns",
        str(host.pid),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    lb_address, host_address = LB_ADDRESS.format(index=index), HOST_ADDRESS.format(index=index)
    for box, device, address in ((lb, lb_side, lb_address), (host, host_side, host_address)):
        box.run("ip", "address", "add", f"{address}/24", "dev", device)
        box.run("ip", "link", "set", device, "up")
    return lb_address, host_address


def haproxy_stats(lb: PrivateSystemd, url: str) -> dict[str, dict[str, str]]:
    """HAProxy's CSV stats by server name (and FRONTEND/BACKEND) for the backend `app`."""
    text = lb.run("curl", "-sS", "--fail", "--max-time", "5", f"{url};csv", timeout=10).stdout
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {row["svname"]: row for row in rows if row["pxname"] in ("app", "web")}


def counter(stats: dict[str, dict[str, str]], server: str, field: str) -> int:
    return int(stats[server][field] or 0)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_max_latency(output: str) -> float:
    """Seconds: the Max column of wrk's Latency line."""
    found = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\b", output)
    assert found, output
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class Retried:
    """Requests HAProxy sent to a second host (its log's retries field, '+' when redispatched)."""

    count: int
    slowest: float  # seconds, the longest total time of one of them
    hosts: dict[str, int]  # where they were finally served


def retried_requests(log: str) -> Retried:
    """From HAProxy's httplog lines: `... web app/host2 Tq/Tw/Tc/Tr/Tt 200 ... a/f/b/s/+1 ...`."""
    found = re.findall(r" web app/(\S+) -?\d+/-?\d+/-?\d+/-?\d+/(\d+) \d+ .* \d+/\d+/\d+/\d+/\+?([1-9]\d*) ", log)
    hosts: dict[str, int] = {}
    for server, _, _ in found:
        hosts[server] = hosts.get(server, 0) + 1
    return Retried(len(found), max((int(total) / 1000 for _, total, _ in found), default=0.0), hosts)
