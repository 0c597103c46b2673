"""A worker that cannot start waits before it exits: 1 s, doubling to 30 s, over consecutive failures.

The crash policy is split the way gunicorn splits it (respawn after a crash, halt on a boot error),
with systemd doing the restarting: the units set no start limit, so a worker that crashes after
READY=1 (os._exit in a request, a segfault in a C extension) is back 0.1 s later however often it
happens, and the port never closes. A worker that cannot start at all (import error, startup
raised, no socket: exit 3) would then be restarted about 8 times a second; so this module spaces the
attempts out itself. Consecutive failures are counted in a small file under the unit's runtime
directory (RuntimeDirectory=, kept across restarts), and the file is removed at READY=1.

While it waits the worker is still starting (Type=notify, no READY=1): systemd's StatusText says why
(`sockact status` shows it), the socket keeps the port open, and systemctl stop ends the wait at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from ..contract import ENV_WORKER, format_cannot_start
from .notify import Notifier

logger = logging.getLogger("sockact.runtime")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
_ready = False
_ready_fd: int | None = None  # the respawning parent's pipe (sockact.runtime.respawn)
_forked = False
engine = ""  # the engine module serving, told to that parent so that it can load it for the next fork


def ready() -> bool:
    """True once this worker sent READY=1: a failure from then on is a crash, not a boot failure."""
    return _ready


def _counter_path() -> str | None:
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    worker = os.environ.get(ENV_WORKER)
    if not directory or not worker:
        return None
    return os.path.join(directory, f"boot-failures.{worker}")


def failures() -> int:
    """Consecutive boot failures of this worker instance before this attempt."""
    path = _counter_path()
    if path is None:
        return 0
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _record(count: int) -> None:
    path = _counter_path()
    if path is None:
        return
    try:
        with open(path + ".new", "w", encoding="ascii") as file:
            file.write(f"{count}\n")
        os.replace(path + ".new", path)
    except OSError as exc:  # a read-only or missing runtime directory: every attempt waits FIRST_DELAY
        logger.debug("cannot record boot failures in %s: %s", path, exc)


def delay(attempt: int) -> float:
    """Seconds to wait after the attempt-th consecutive failure (1-based)."""
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(0, attempt - 1))


def started() -> None:
    """READY=1 was sent: the next failure is a crash, and the count of boot failures starts again."""
    global _ready, _ready_fd
    _ready = True
    if _ready_fd is not None:
        try:
            os.write(_ready_fd, f"R{engine}".encode("ascii"))
            os.close(_ready_fd)
        except OSError as exc:
            logger.warning("cannot tell the respawning parent this process is ready: %s", exc)
        _ready_fd = None
    path = _counter_path()
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.debug("cannot reset boot failures in %s: %s", path, exc)


def report_ready_to(fd: int) -> None:
    """Write "R<engine>" to `fd` at READY=1 (a forked serving process tells its parent)."""
    global _ready_fd, _forked
    _ready_fd = fd
    _forked = True


def forked() -> bool:
    """True in a serving process forked by sockact.runtime.respawn."""
    return _forked


def under_systemd() -> bool:
    """Started by systemd (which will start it again); by hand, a boot error just exits."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"))


def failed(reason: str, notifier: Notifier) -> None:
    """Log the reason in one line with the wait, tell systemd, and wait (under systemd only)."""
    if not under_systemd():
        logger.error("%s", reason)
        return
    attempt = failures() + 1
    wait = delay(attempt)
    _record(attempt)
    logger.error("%s — retrying in %g s (attempt %d)", reason, wait, attempt)
    # Start jobs have a timeout (TimeoutStartSec=, 90 s by default): the wait must not run into it.
    notifier.extend_timeout(wait + 10)
    notifier.status(format_cannot_start(reason, wait, attempt))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # systemctl stop ends the wait at once
    time.sleep(wait)
