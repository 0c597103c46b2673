"""Facts systemd does not hold: listen backlogs from the kernel, RSS and CPU% from psutil, STATUS= counters."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

TCP_LISTEN = "0A"  # st column of /proc/net/tcp for a listening socket
_STATUS_SERVING = re.compile(r"serving: (\d+) requests, (\d+) in flight, ([0-9.]+) req/s")
_STATUS_DRAINING = re.compile(r"draining: (\d+) in flight")
# Written by sockact.runtime.stuck: threads of a WSGI worker stuck past the request timeout, or an
# ASGI worker's event loop blocked.
_STATUS_STUCK = re.compile(r"; (\d+) of (\d+) threads stuck for ([0-9.]+) s")
_STATUS_BLOCKED = re.compile(r"; event loop blocked for ([0-9.]+) s")
_STATUS_REPLACED = re.compile(r"; serving process replaced (\d+) times")


# --- listen backlogs -------------------------------------------------------------------------------


def listen_address(listen: str) -> str:
    """'[::]:8000' from systemd's Listen= value '[::]:8000 (Stream)'."""
    address, _, kind = listen.rpartition(" (")
    return address if kind.endswith(")") else listen


def _proc_net_ip(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # /proc/net/tcp prints each 32-bit word of the address in host (little-endian) byte order.
    raw = bytes.fromhex(hex_ip)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(swapped)


def tcp_listen_queues(table: str) -> dict[tuple[str, int], int]:
    """(ip, port) -> connections waiting to be accepted, from the text of /proc/net/tcp or tcp6."""
    queues: dict[tuple[str, int], int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or fields[3] != TCP_LISTEN:
            continue
        hex_ip, hex_port = fields[1].split(":")
        # For a listening socket rx_queue is the length of its accept queue.
        rx_queue = int(fields[4].split(":")[1], 16)
        queues.setdefault((str(_proc_net_ip(hex_ip)), int(hex_port, 16)), rx_queue)
    return queues


def unix_listen_queues(ss_output: str) -> dict[str, int]:
    """path -> connections waiting, from ``ss -xlnH`` (Netid State Recv-Q Send-Q Path Inode Peer PeerInode)."""
    queues: dict[str, int] = {}
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "LISTEN" and fields[2].isdigit():
            queues.setdefault(" ".join(fields[4:-3]), int(fields[2]))
    return queues


def _tcp_key(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        return str(ipaddress.ip_address(host.strip("[]"))), int(port)
    except ValueError:
        return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _ss_unix() -> str:
    try:
        return subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def backlogs(addresses: list[str]) -> dict[str, int | None]:
    """Connections waiting in each listening socket's accept queue now (None when not found).

    Read in this process's network namespace, which is systemd's when sockact runs beside it.
    """
    tcp: dict[tuple[str, int], int] = {}
    if any(not address.startswith("/") for address in addresses):
        tcp = {**tcp_listen_queues(_read("/proc/net/tcp6")), **tcp_listen_queues(_read("/proc/net/tcp"))}
    unix = unix_listen_queues(_ss_unix()) if any(address.startswith("/") for address in addresses) else {}
    found: dict[str, int | None] = {}
    for address in addresses:
        key = _tcp_key(address)
        found[address] = unix.get(address) if address.startswith("/") else tcp.get(key) if key else None
    return found


# --- STATUS= ---------------------------------------------------------------------------------------


class Counters(NamedTuple):
    """What a sockact worker publishes in STATUS=; None where the text does not say."""

    requests: int | None
    in_flight: int | None
    per_second: float | None
    threads_stuck: int | None = None  # WSGI threads running one request past the request timeout
    threads: int | None = None
    stuck_seconds: float | None = None  # how long the youngest of those has run
    loop_blocked_seconds: float | None = None  # ASGI: the event loop has not turned for this long
    replaced: int = 0  # serving processes the unit's main process forked again (crashes, recycles)

    @property
    def not_serving(self) -> str | None:
        """Why the worker serves nothing although systemd sees it running, or None."""
        if self.loop_blocked_seconds is not None:
            return f"event loop blocked for {self.loop_blocked_seconds:.0f} s"
        if self.threads_stuck is not None and self.threads and self.threads_stuck >= self.threads:
            return f"{self.threads_stuck} of {self.threads} threads stuck for {self.stuck_seconds:.0f} s"
        return None


def parse_status_text(text: str) -> Counters:
    """Parse the runtime's STATUS= text ('serving: 12 requests, 1 in flight, 3.0 req/s; ...', with
    '; 3 of 10 threads stuck for 45 s' or '; event loop blocked for 12 s' before '; ready since')."""
    serving = _STATUS_SERVING.search(text)
    if serving:
        counters = Counters(int(serving.group(1)), int(serving.group(2)), float(serving.group(3)))
        stuck, blocked = _STATUS_STUCK.search(text), _STATUS_BLOCKED.search(text)
        if stuck:
            counters = counters._replace(
                threads_stuck=int(stuck.group(1)), threads=int(stuck.group(2)), stuck_seconds=float(stuck.group(3))
            )
        if blocked:
            counters = counters._replace(loop_blocked_seconds=float(blocked.group(1)))
        replaced = _STATUS_REPLACED.search(text)
        if replaced:
            counters = counters._replace(replaced=int(replaced.group(1)))
        return counters
    draining = _STATUS_DRAINING.search(text)
    if draining:
        return Counters(None, int(draining.group(1)), None)
    return Counters(None, None, None)


# --- psutil ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes, the worker's main process and its children
    cpu_percent: float | None  # 100 = one core; None until a second sample exists


class Sampler:
    """RSS and CPU% of each worker's process tree; CPU% covers the time since this sampler last saw the process."""

    def __init__(self) -> None:
        self._known: dict[int, psutil.Process] = {}
        self._unmeasured: set[int] = set()  # seen once: psutil's first cpu_percent() is meaningless

    def _process(self, pid: int) -> psutil.Process:
        known = self._known.get(pid)
        if known is None or not known.is_running():  # is_running() also detects a reused PID
            known = self._known[pid] = psutil.Process(pid)
            self._unmeasured.add(pid)
        return known

    def _tree(self, pid: int) -> list[psutil.Process]:
        main = self._process(pid)
        return [main, *(self._process(child.pid) for child in main.children(recursive=True))]

    def usage(self, pid: int) -> Usage | None:
        """None when the process is gone or not readable."""
        try:
            tree = self._tree(pid)
            rss = sum(proc.memory_info().rss for proc in tree)
            cpu = sum(proc.cpu_percent(None) for proc in tree)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        pids = {proc.pid for proc in tree}
        measured = not pids & self._unmeasured
        self._unmeasured -= pids
        return Usage(rss, cpu if measured else None)

    def prune(self) -> None:
        """Forget processes that exited, so a long --watch does not collect them."""
        for pid, proc in list(self._known.items()):
            if not proc.is_running():
                del self._known[pid]
                self._unmeasured.discard(pid)
