"""sd_notify(3): READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to $NOTIFY_SOCKET, over one socket for life.

"Not under systemd" is an explicit branch (no NOTIFY_SOCKET), not a swallowed exception.

A worker holding thousands of connections may be out of file descriptors exactly when it must tell
systemd it is alive: sd_notify(3) (systemd-python's daemon.notify) opens a new socket per message,
and that EMFILE once escaped into the serving loop and killed every worker. So the socket is opened
once, at start, with sdnotify's sender (one connected datagram socket), made non-blocking so a busy
PID 1 cannot stall the loop, and a message that cannot be delivered is counted, never raised: the
serving loop sends it again on its next tick.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

Sender = Callable[[str], None]

logger = logging.getLogger("sockact.runtime")


def _socket_sender() -> Sender:
    """One connected, non-blocking datagram socket to $NOTIFY_SOCKET (abstract "@" names included),
    opened now; raises OSError when it cannot be."""
    import sdnotify

    # debug=True: sdnotify raises instead of silently keeping no socket.
    sock = sdnotify.SystemdNotifier(debug=True).socket
    sock.setblocking(False)

    def send(state: str) -> None:
        # UTF-8 (sdnotify's own notify() encodes Latin-1 and would raise on an app's error text).
        sock.send(state.encode("utf-8", "replace"))

    return send


class Notifier:
    """Sends sd_notify states; ``enabled`` is False when the process is not under systemd.

    ``send`` never raises: a state that could not be delivered (EMFILE, EAGAIN from a busy manager,
    the manager gone) returns False and is counted in ``failures``; callers that must get a state
    through (READY=1, WATCHDOG=1) send it again on their next tick.
    """

    def __init__(self, sender: Sender | None = None) -> None:
        path = os.environ.get("NOTIFY_SOCKET")
        self.enabled = bool(path) or sender is not None
        self.failures = 0
        self._logged_failure = False
        self._sender = sender
        if sender is None and path:
            try:  # now, while descriptors are plenty; send() tries again if this fails
                self._sender = _socket_sender()
            except OSError as exc:
                logger.warning("cannot open the notify socket %s: %s", path, exc.strerror or exc)

    def send(self, state: str) -> bool:
        if not self.enabled:
            return False
        try:
            if self._sender is None:
                self._sender = _socket_sender()  # opened on first use, again after a failed open
            self._sender(state)
        except OSError as exc:
            self.failures += 1
            if not self._logged_failure:  # once: the cause (EMFILE, a busy manager) repeats every tick
                self._logged_failure = True
                logger.warning("cannot notify systemd (%s); retrying on every tick", exc.strerror or exc)
            return False
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
        """EXTEND_TIMEOUT_USEC=: the start (or stop) job may take this much longer from now."""
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
