"""sd_notify(3): READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to $NOTIFY_SOCKET.

"Not under systemd" is an explicit branch (no NOTIFY_SOCKET), not a swallowed exception.
Uses systemd-python's sd_notify when importable, else sdnotify's sender with errors raised.
"""

from __future__ import annotations

import os
from typing import Callable

Sender = Callable[[str], None]


def _systemd_sender() -> Sender | None:
    try:
        from systemd import daemon
    except ImportError:
        return None

    def send(state: str) -> None:
        if not daemon.notify(state):
            raise OSError(f"sd_notify({state!r}) was not delivered")

    return send


def _sdnotify_sender() -> Sender:
    import sdnotify

    # debug=True: sdnotify raises instead of silently dropping a notification.
    notifier = sdnotify.SystemdNotifier(debug=True)

    def send(state: str) -> None:
        notifier.notify(state)

    return send


class Notifier:
    """Sends sd_notify states; ``enabled`` is False when the process is not under systemd."""

    def __init__(self, sender: Sender | None = None, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.enabled = bool(path) or sender is not None
        self._sender = sender
        if self._sender is None and self.enabled:
            self._sender = _systemd_sender() or _sdnotify_sender()

    def send(self, state: str) -> bool:
        if not self.enabled or self._sender is None:
            return False
        self._sender(state)
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


_default: Notifier | None = None


def default_notifier() -> Notifier:
    global _default
    if _default is None:
        _default = Notifier()
    return _default


def watchdog_interval() -> float | None:
    """sd_watchdog_enabled(3): the WatchdogSec= in seconds if it applies to this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid is not None and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
