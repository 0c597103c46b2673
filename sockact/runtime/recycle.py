"""Worker recycling (gunicorn's max_requests, uWSGI's reload-on-rss, PM2's max_memory_restart): when a
worker leaves on its own, the one line that says why, and the exit status that gets it restarted.

A recycling worker drains exactly as on SIGTERM (the engines set the same flag their signal handler
sets), then exits with RECYCLE_EXIT. The units restart a worker only on failure (Restart=on-failure)
and never after EXIT_CANNOT_START (RestartPreventExitStatus=), so recycling needs a non-zero status
of its own: systemd starts the worker again at once while its siblings keep serving.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from dataclasses import dataclass

logger = logging.getLogger("sockact.runtime")

RECYCLE_EXIT = 4  # a worker that reached --max-requests or --max-rss: systemd restarts it at once
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What `sockact run` was given; 0 turns a limit off."""

    max_requests: int = 0
    max_requests_jitter: int = 0
    max_rss_mib: int = 0

    @property
    def any(self) -> bool:
        return self.max_requests > 0 or self.max_rss_mib > 0


def draw_limit(max_requests: int, jitter: int, rng: random.Random | None = None) -> int:
    """This worker's own request limit, uniform in [max_requests, max_requests + jitter] as gunicorn
    draws it, so workers started together do not all recycle together; 0 stays off."""
    if max_requests <= 0:
        return 0
    return max_requests + (rng or random).randint(0, max(0, jitter))


class Rss:
    """The resident set size from /proc/self/statm: one pread() on a descriptor kept open (1.5 us,
    a twelfth of opening the file each time), cheap enough for every tick of the serving loop."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.page = os.sysconf("SC_PAGE_SIZE")

    def bytes(self) -> int:
        fields = os.pread(self.fd, 128, 0).split()
        return int(fields[1]) * self.page  # the second field: resident pages

    def close(self) -> None:
        os.close(self.fd)


class Recycler:
    """One worker's limits. Asked per request (`served`) and from the tick (`due`); decides once."""

    def __init__(self, limits: Limits, rng: random.Random | None = None) -> None:
        self.limits = limits
        self.request_limit = draw_limit(limits.max_requests, limits.max_requests_jitter, rng)
        self._requests_at = self.request_limit or math.inf  # one comparison per request, even when off
        self.rss_limit = limits.max_rss_mib * MIB
        self.rss = Rss() if self.rss_limit else None
        self.reason: str | None = None
        self._lock = threading.Lock()  # app threads (WSGI) and the tick may both reach a limit

    @property
    def recycling(self) -> bool:
        return self.reason is not None

    def started(self) -> None:
        """At READY=1, once the app is loaded: a --max-rss the worker is over already would only
        restart it in a loop that serves nothing, so that limit is dropped with a warning instead."""
        if self.rss is None:
            return
        now = self.rss.bytes()
        if now >= self.rss_limit:
            logger.warning(
                "--max-rss %d MiB is below this worker's RSS after startup (%d MiB): not recycling "
                "for memory; raise --max-rss above it",
                self.limits.max_rss_mib,
                now // MIB,
            )
            self.rss.close()
            self.rss = None

    def served(self, requests: int) -> bool:
        """Called as each request begins, with the worker's count so far: True for the first request
        at the limit (the engine stops taking work at once), False ever after and while under it."""
        return requests >= self._requests_at and self._decide(
            f"recycling after {requests} requests (--max-requests {self.limits.max_requests}, "
            f"this worker's limit {self.request_limit})"
        )

    def due(self, requests: int) -> bool:
        """From the serving loop's tick: True once, when a limit is passed (an engine that does not
        count per request still leaves on the next tick)."""
        if self.reason is not None:
            return False
        if self.served(requests):
            return True
        if self.rss is not None:
            rss = self.rss.bytes()
            if rss > self.rss_limit:
                return self._decide(
                    f"recycling: RSS {rss // MIB} MiB over --max-rss {self.limits.max_rss_mib} MiB "
                    f"after {requests} requests"
                )
        return False

    def _decide(self, why: str) -> bool:
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = why
        logger.info("%s", why)
        return True

    def exit_status(self) -> int:
        return RECYCLE_EXIT if self.reason is not None else 0
