"""Socket adoption, shaped after sd_listen_fds(3): LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES."""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

from ..contract import HEALTH_FD_NAME
from ..errors import RuntimeFailure

SD_LISTEN_FDS_START = 3
_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_adopted: list[tuple[socket.socket, str]] | None = None


def listen_fds(unset_environment: bool = True) -> list[tuple[int, str]]:
    """Mirror sd_listen_fds_with_names(): the passed fds and their names, [] when none were passed.

    Raises RuntimeFailure when fds were passed to another process (LISTEN_PID differs): using them
    would steal a socket that belongs to somebody else.
    """
    count_text = os.environ.get("LISTEN_FDS")
    pid_text = os.environ.get("LISTEN_PID")
    names_text = os.environ.get("LISTEN_FDNAMES", "")
    if unset_environment:
        # Children (workers of workers, subprocesses of the app) must not adopt our sockets.
        for key in _ENV:
            os.environ.pop(key, None)
    if count_text is None:
        return []
    if pid_text is not None and pid_text != str(os.getpid()):
        raise RuntimeFailure(
            f"LISTEN_FDS was passed to PID {pid_text}, not to this process ({os.getpid()}); "
            "start the worker from systemd (Sockets=) or use --bind for local runs"
        )
    if not count_text.isdigit():
        raise RuntimeFailure(f"LISTEN_FDS={count_text!r} is not a number; systemd sets it, do not set it by hand")
    count = int(count_text)
    names = names_text.split(":") if names_text else []
    names += ["unknown"] * (count - len(names))
    return [(SD_LISTEN_FDS_START + i, names[i]) for i in range(count)]


def adopt(fd: int) -> socket.socket:
    """Wrap an inherited fd keeping its real family and type (socket.socket(fileno=...)).

    socket.fromfd(fd, AF_UNIX, ...) would mislabel a TCP socket, and asyncio would then skip
    TCP_NODELAY: 40x fewer requests/s on small responses.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise RuntimeFailure(
            f"fd {fd} is not open although LISTEN_FDS says systemd passed it; start the worker "
            "through its socket unit, or unset LISTEN_FDS to --bind a socket of its own"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise RuntimeFailure(f"fd {fd} passed by systemd is not a socket; use ListenStream= in the socket unit")
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # the app's subprocesses must not hold the listening socket open
    if sock.type != socket.SOCK_STREAM:
        raise RuntimeFailure(f"fd {fd} is not a stream socket; sockact serves ListenStream= sockets only")
    return sock


def _adopt_all() -> list[tuple[socket.socket, str]]:
    """Every passed socket with its name, adopted once per process."""
    global _adopted
    if _adopted is None:
        _adopted = [(adopt(fd), name) for fd, name in listen_fds()]
    return _adopted


def listeners() -> list[socket.socket]:
    """The adopted listening sockets of the app: every passed fd except those named "health"."""
    return [sock for sock, name in _adopt_all() if name != HEALTH_FD_NAME]


def health_listeners() -> list[socket.socket]:
    """The adopted sockets of the health endpoint (FileDescriptorName=health), [] when none were passed."""
    return [sock for sock, name in _adopt_all() if name == HEALTH_FD_NAME]


def bind(address: str, option: str = "--bind") -> socket.socket:
    """For local runs without systemd: PORT, HOST:PORT, [V6]:PORT or /path/to.sock."""
    family, target = _parse(address, option)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            if os.path.exists(target) and stat.S_ISSOCK(os.stat(target).st_mode):
                os.unlink(target)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if target[0] == "::" else 1)
        sock.bind(target)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"cannot bind {option} {address!r}: {exc.strerror}") from None
    return sock


def _parse(address: str, option: str = "--bind") -> tuple[socket.AddressFamily, Any]:
    if address.startswith("/"):
        return socket.AF_UNIX, address
    if address.isdigit():
        return socket.AF_INET6, ("::", int(address))
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        return socket.AF_INET6, (host, _port(port, address, option))
    host, _, port = address.rpartition(":")
    return socket.AF_INET, (host, _port(port, address, option))


def _port(text: str, address: str, option: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise RuntimeFailure(f"{option} {address!r}: use PORT, HOST:PORT, [V6ADDR]:PORT or an absolute socket path")
    return int(text)
