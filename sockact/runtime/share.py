"""One app, one share of the CPU: the workers' autogroups together weigh what one service's does.

systemd starts every service in a session of its own, and with the kernel's autogroups
(/proc/sys/kernel/sched_autogroup_enabled, on in Debian's and most distributions' kernels) every
session is a scheduling group with the weight of one nice-0 task. gunicorn's or uvicorn's workers
are children of one master, one session, one group; sockact's N workers are N units, N sessions,
N groups. Under contention an app with 8 workers would then take 8 shares against one for the
PostgreSQL, Redis or nginx on the same host that it depends on (and one for a load generator on
the same machine: measured, two workers against wrk on 2 cores left the cores idle 16-18 % of the
time in `Connection: close` runs, 13-15 % with the weight below).

So each worker raises its autogroup's nice value until the N groups weigh together about what one
does (weight 1024 / 1.25**nice; nice = log1.25(N), rounded): 2 workers nice 3, 4 workers 6,
8 workers 9. That is what systemd itself gives the app where the cgroup CPU controller is on (the
instances share system-NAME.slice, one entity among the other services), and where it is on the
autogroups do not apply and this changes nothing. The nice follows the live worker count: up at
once when workers are added, down only once the count has been lower for SETTLE seconds (a rolling
reload briefly runs one worker more). No privilege is needed for any value from 0 to 19.
SOCKACT_CPU_SHARE=worker turns it off: every worker one full share.
"""

from __future__ import annotations

import logging
import math
import os
import time

from ..errors import RuntimeFailure

logger = logging.getLogger("sockact.runtime")

AUTOGROUP = "/proc/self/autogroup"
ENABLED = "/proc/sys/kernel/sched_autogroup_enabled"
NICE_STEP = 1.25  # each nice level weighs 1.25 times less (the kernel's sched_prio_to_weight table)
MODES = ("app", "worker")
SETTLE = 5.0  # seconds a lower worker count must last before the nice goes down


def nice_for(workers: int) -> int:
    """The autogroup nice at which `workers` groups weigh about as much as one nice-0 group."""
    if workers <= 1:
        return 0
    return min(19, round(math.log(workers, NICE_STEP)))


def mode_from_env() -> str:
    value = os.environ.get("SOCKACT_CPU_SHARE", "app")
    if value not in MODES:
        raise RuntimeFailure(
            f"SOCKACT_CPU_SHARE={value!r} is not one of {', '.join(MODES)}: 'app' (the default) "
            "gives all workers together one service's share of the CPU, 'worker' one share each"
        )
    return value


class CpuShare:
    """Applies nice_for(workers) to this worker's autogroup: raised at once, lowered after SETTLE."""

    def __init__(self, mode: str = "app") -> None:
        self.applied = self._current() if mode == "app" and self._applies() else None
        self.wanted = 0
        self.pending = False
        self.lower_since: float | None = None  # when the count first asked for a lower nice

    @staticmethod
    def _applies() -> bool:
        """This worker's session is its unit's own (systemd starts each service as a session leader;
        with --respawn the leader is the parent that forked this serving process), and autogroups are
        not known to be off. Under ProcSubset=pid /proc/sys is hidden; the nice of an autogroup that
        the kernel ignores is harmless."""
        if os.getsid(0) not in (os.getpid(), os.getppid()):
            return False
        try:
            with open(ENABLED) as file:
                return file.read().strip() != "0"
        except OSError:
            return True

    @staticmethod
    def _current() -> int | None:
        try:
            with open(AUTOGROUP) as file:  # "/autogroup-123 nice 0"
                return int(file.read().split()[-1])
        except (OSError, ValueError, IndexError):
            return None

    def update(self, workers: int, now: float | None = None) -> None:
        """Called with the number of live workers (this one included) about once a second."""
        if self.applied is None:
            return
        wanted = nice_for(workers)
        if wanted >= self.applied:
            self.lower_since = None
            if wanted == self.applied:
                return
        else:
            now = time.monotonic() if now is None else now
            if self.lower_since is None:
                self.lower_since = now
            if now - self.lower_since < SETTLE:
                return
            self.lower_since = None
        self.wanted = wanted
        self.apply()

    def apply(self) -> None:
        """Write the wanted nice; when the kernel says "again", `pending` stays set for the next tick."""
        assert self.applied is not None
        try:
            with open(AUTOGROUP, "w") as file:
                file.write(str(self.wanted))
        except BlockingIOError:
            # The kernel takes one such change per 0.1 s from all unprivileged processes, and workers
            # started together look at the same moment: the next tick (0.1 s) tries again.
            self.pending = True
            return
        except OSError as exc:
            logger.debug("cannot set this worker's autogroup nice to %d: %s", self.wanted, exc)
            self.applied, self.pending = None, False
            return
        self.applied, self.pending = self.wanted, False
