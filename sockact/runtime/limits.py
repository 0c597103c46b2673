"""File descriptors: the worker's limit raised as systemd advises for servers, and the number of
connections a worker holds before it stops accepting (the rest wait in the listen backlog).

Measured with the default limit (1024 soft): about 2,100 idle keep-alive connections crashed two
ASGI workers, and under EMFILE libuv's accept loop closes connections waiting in the backlog to keep
going. So the units set LimitNOFILE= (soft = hard), the runtime raises its soft limit to the hard one
where it may (outside the sandbox, whose seccomp filter denies setrlimit), and every engine stops
accepting while `connection_ceiling()` connections are open, well before the limit, leaving room for
what the app itself opens (database connections, files) and for a burst accepted in one go.
"""

from __future__ import annotations

import logging
import os
import resource

logger = logging.getLogger("sockact.runtime")

RESERVE_MIN = 256  # descriptors kept for the app and the runtime, at the least
RESERVE_SHARE = 0.1  # ... or this share of the limit, when more
RESUME_SHARE = 0.9  # a full worker accepts again below this share of its ceiling


def prepare() -> None:
    raise_nofile()
    preload_libgcc()


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (systemd.exec(5): what servers should do themselves)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # EPERM under the unit's seccomp filter: LimitNOFILE= did it
            logger.debug("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)


def preload_libgcc() -> None:
    """glibc loads libgcc_s.so.1 the first time a thread exits; loading it under EMFILE fails and
    aborts the whole process ("libgcc_s.so.1 must be installed for pthread_exit to work")."""
    import ctypes

    try:
        ctypes.CDLL("libgcc_s.so.1")
    except OSError as exc:
        logger.debug("cannot preload libgcc_s.so.1: %s", exc)


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def connection_ceiling(soft: int | None = None, in_use: int | None = None) -> int:
    """How many connections this worker may hold open: the soft limit less what is open now (the
    app is loaded) and a reserve."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    if in_use is None:
        in_use = open_descriptors()
    reserve = max(RESERVE_MIN, int(soft * RESERVE_SHARE))
    return max(16, soft - in_use - reserve)


def resume_below(ceiling: int) -> int:
    return int(ceiling * RESUME_SHARE)
