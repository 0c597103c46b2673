"""Facts systemd does not hold: listen backlogs from the kernel, RSS and CPU% from psutil, STATUS= counters."""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

TCP_LISTEN = "0A"  # st column of /proc/net/tcp for a listening socket

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
