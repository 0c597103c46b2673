"""sockact: Python web apps served by one worker per core on a systemd-owned socket.

The public API for other servers is small and light to import: ``listeners()`` returns the
sockets systemd passed to this process, and ``notify()``/``ready()``/``stopping()``/``status()``
speak sd_notify. The generator and the CLI are never imported from here.
"""

from __future__ import annotations

import socket

__version__ = "0.1.0"

__all__ = ["__version__", "listeners", "notify", "ready", "status", "stopping"]


def listeners() -> list[socket.socket]:
    """The listening sockets systemd passed to this process (sd_listen_fds), adopted once."""
    from .runtime.listen import listeners as adopted

    return adopted()


def notify(state: str) -> bool:
    """Send one sd_notify state string; False when not running under systemd."""
    from .runtime.notify import default_notifier

    return default_notifier().send(state)


def ready() -> bool:
    return notify("READY=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
