"""Least-connections accepting across the workers of one app, through a tiny shared scoreboard.

Every worker waits on the same listening socket, and the kernel wakes them in a fixed order, so one
worker takes far more than its share (measured: 1.3x with short-lived connections, 3x for keep-alive
connections opened at once). Each worker publishes its open-connection count and a heartbeat in its
own small file under /dev/shm (sockact.APP@WORKER.PID) (an API file system, writable even under
ProtectSystem=strict); a worker
accepts only while no live sibling has fewer connections. Siblings whose heartbeat is stale (hung,
dead, draining) are ignored, so a stuck worker can never stop the others from accepting.

The same files tell a worker whether the host goes on serving without it (`others_serving`): the health
endpoint's /ready and the drain delay ask that when this worker is leaving or not ready itself.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import mmap
import os
import stat
import struct
import time
from typing import Callable

from ..contract import ENV_APP, ENV_WORKER

logger = logging.getLogger("sockact.runtime")

# Open connections, heartbeat (CLOCK_MONOTONIC, shared by all processes), and flags: PAUSED while this
# worker has stopped accepting, LEAVING from its SIGTERM on. A worker defers only to siblings that
# accept: were it to stop accepting for one that had itself stopped, nobody would accept until a tick
# (measured: 64 keep-alive connections opened at once waited up to 300 ms, three at a time, as two
# workers took turns pausing). Any flag set reads as "paused" to a worker of an earlier sockact, which
# then never defers to a leaving worker either: the slot's layout is unchanged.
SLOT = struct.Struct("=qdq")
COUNT = struct.Struct("=q")  # the slot's first field alone: written on every connection, so kept cheap
FLAGS = struct.Struct("=q")
FLAGS_AT = struct.calcsize("=qd")
PAUSED, LEAVING = 1, 2
STALE = 1.0  # seconds without a heartbeat after which a sibling is ignored
FORGOTTEN = 60.0  # seconds after which a silent sibling's file is removed (a worker killed by SIGKILL)
DRAINING = 1 << 40  # published while draining: siblings never defer to a worker that is leaving

# A worker PAUSE_AHEAD connections above its least busy sibling (or a quarter of that sibling's count,
# when that is more) stops accepting, and starts again within a third of that: the gap keeps it from
# switching on every connection, and with short-lived connections it seldom switches at all.
# Every engine uses this rule, through AcceptGate (server.Admission, httpd.Engine, wsgi.Engine).
PAUSE_AHEAD = 3
# A paused worker looks again this often (and on the tick): no sibling stops accepting for it meanwhile,
# so in a burst of new connections it must take its share again soon, not a tick later.
PAUSED_LOOK = 0.005


def pause_threshold(fewest: int) -> int:
    return max(PAUSE_AHEAD, fewest // 4)


class Scoreboard:
    def __init__(self, app: str, worker: str, directory: str = "/dev/shm") -> None:
        self.prefix = slot_prefix(app, directory)
        # The PID keeps names unique: a file left by a killed worker may belong to another user.
        self.path = f"{self.prefix}{worker}.{os.getpid()}"
        self.own = _allocated_slot(self.path)
        self.count = 0
        self.paused = False
        self.leaving = False
        # Set on the loop's tick: how many keep-alive connections this worker should hand over (half
        # its lead over the least busy sibling, when two or more); that many next requests are answered
        # with Connection: close, and their clients reconnect to a less busy worker.
        self.rebalance_due = 0
        self.siblings: dict[str, mmap.mmap] = {}
        self.heartbeat(0)
        self.refresh()

    def publish(self, count: int) -> None:
        """The open-connection count, on every accept and close; the heartbeat comes from the tick."""
        self.count = count
        COUNT.pack_into(self.own, 0, count)

    def heartbeat(self, count: int | None = None) -> None:
        """Called from the serving loop's tick, with the exact count so no drift can last."""
        if count is not None:
            self.count = count
        SLOT.pack_into(self.own, 0, self.count, time.monotonic(), self._flags())
        self.rebalance_due = max(0, self.ahead() // 2)  # at least one exactly when overloaded()

    def accepting(self, accepting: bool) -> None:
        """Tell the siblings whether this worker accepts; they stop accepting only for one that does."""
        if self.paused == accepting:
            self.paused = not accepting
            FLAGS.pack_into(self.own, FLAGS_AT, self._flags())

    def leave(self) -> None:
        """SIGTERM came: siblings stop counting on this worker (others_serving) and stop deferring to it."""
        self.leaving = True
        FLAGS.pack_into(self.own, FLAGS_AT, self._flags())

    def _flags(self) -> int:
        return (PAUSED if self.paused else 0) | (LEAVING if self.leaving else 0)

    def refresh(self) -> None:
        """Find siblings (workers come and go with scale and reload); called about once a second."""
        found = {path for path in glob.glob(glob.escape(self.prefix) + "*") if path != self.path}
        found -= self._forget_dead()
        for gone in set(self.siblings) - found:
            self.siblings.pop(gone).close()
        for path in found - set(self.siblings):
            self._open(path)

    def _forget_dead(self) -> set[str]:
        now, dead = time.monotonic(), set()
        for path, slot in self.siblings.items():
            count, beat, _ = SLOT.unpack_from(slot, 0)
            if count != DRAINING and now - beat > FORGOTTEN:
                try:
                    os.unlink(path)  # allowed when the workers share their user, as sockact's units do
                    dead.add(path)
                except OSError:
                    pass
        return dead

    def _open(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            if _backed(os.fstat(fd)):
                self.siblings[path] = mmap.mmap(fd, SLOT.size, prot=mmap.PROT_READ)
        except OSError:
            pass  # gone or unmappable: not a sibling worth deferring to
        finally:
            os.close(fd)

    def fewest(self, accepting: bool = False) -> int | None:
        """The lowest open-connection count among live siblings (only those that accept, with
        `accepting`), None when there are none."""
        now = time.monotonic()
        fewest: int | None = None
        for slot in self.siblings.values():
            count, beat, flags = SLOT.unpack_from(slot, 0)
            if (
                now - beat < STALE
                and not flags & LEAVING
                and not (accepting and flags)
                and (fewest is None or count < fewest)
            ):
                fewest = count
        return fewest

    def live(self) -> int:
        """How many siblings sent a heartbeat within STALE."""
        now = time.monotonic()
        return sum(1 for slot in self.siblings.values() if now - SLOT.unpack_from(slot, 0)[1] < STALE)

    def least_loaded(self) -> bool:
        """True unless a live sibling has fewer open connections than this worker."""
        if self.count == 0:
            return True  # cheap path: an idle worker always takes the connection
        fewest = self.fewest()
        return fewest is None or fewest >= self.count

    def ahead(self) -> int:
        """How many connections this worker holds above its least busy live sibling (0 without one)."""
        fewest = self.fewest()
        return 0 if fewest is None else self.count - fewest

    def overloaded(self) -> bool:
        """Two or more connections above a live sibling: keep-alive connections opened in a burst
        landed unevenly, so this worker closes one after its response and the client reconnects
        (to the less busy worker, by the rule above)."""
        return self.ahead() >= 2

    def close(self) -> None:
        SLOT.pack_into(self.own, 0, DRAINING, 0.0, 1)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def slot_prefix(app: str, directory: str = "/dev/shm") -> str:
    # "@" cannot occur in an app name, so app "a" never globs app "a.b"'s files.
    return os.path.join(directory, f"sockact.{app}@")


def others_serving(prefix: str) -> bool:
    """Whether a worker of this app serves besides the caller: a slot with a heartbeat within STALE
    (its loop runs; slots appear once the app's startup completed) and not leaving or draining. The
    caller's own slot never counts, since it asks only while leaving (LEAVING set), starting (no slot
    yet) or blocked (a stale beat). Read with pread on every call, never mapped: the health thread
    calls it too, and a worker that started a moment ago is seen at once, not at the next refresh()."""
    now = time.monotonic()
    for path in glob.glob(glob.escape(prefix) + "*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            data = os.pread(fd, SLOT.size, 0) if _backed(os.fstat(fd)) else b""
        except OSError:
            data = b""
        finally:
            os.close(fd)
        if len(data) == SLOT.size:
            count, beat, flags = SLOT.unpack(data)
            if count != DRAINING and now - beat < STALE and not flags & LEAVING:
                return True
    return False


def _allocated_slot(path: str) -> mmap.mmap:
    """This worker's slot, mapped read-write, its page allocated before anyone maps it.

    A tmpfs page first touched through a mapping is allocated at that moment; when /dev/shm is full
    the toucher gets SIGBUS, and that includes every sibling reading the slot (a read fault on a
    hole allocates too). posix_fallocate turns that into ENOSPC here, and the file is built under a
    hidden name and renamed into place, so siblings only ever find slots whose page exists."""
    hidden = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)  # siblings may run as other (dynamic) users; they only read
        os.posix_fallocate(fd, 0, SLOT.size)
        own = mmap.mmap(fd, SLOT.size)
        SLOT.pack_into(own, 0, 0, time.monotonic(), 0)  # live from the moment siblings see it
        os.rename(hidden, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(hidden)
        raise
    finally:
        os.close(fd)
    return own


def _backed(st: os.stat_result) -> bool:
    """A slot a sibling may map: exactly one slot long, so within one page, and that page allocated
    (st_blocks counts 512-byte units), so reading it can never fault in a page tmpfs has no room for.
    A slot only sized, never written (left by a worker of an earlier sockact that died of a full
    /dev/shm before its first heartbeat), fails this."""
    return stat.S_ISREG(st.st_mode) and st.st_size == SLOT.size and st.st_blocks * 512 >= SLOT.size


class AcceptGate:
    """When a worker stops accepting and when it starts again, by the rule above. The siblings' counts
    are read only when this worker's own count reaches `pause_at` (set at the last look), so the
    check on every accepted connection costs one comparison."""

    def __init__(self, board: Scoreboard | None) -> None:
        self.board = board
        self.pause_at = math.inf
        self.look()

    def look(self) -> int | None:
        """The least busy live sibling's count (None without one); sets the count to look again at."""
        fewest = self.board.fewest(accepting=True) if self.board is not None else None
        self.pause_at = math.inf if fewest is None else fewest + pause_threshold(fewest)
        return fewest

    def near(self) -> bool:
        """This worker's count reached the threshold of the last look: time to look again (ahead())."""
        return self.board is not None and self.board.count >= self.pause_at

    def ahead(self) -> bool:
        """Look again; True when this worker should stop accepting (the siblings are told it does)."""
        self.look()
        if self.board is None or self.board.count < self.pause_at:
            return False
        self.board.accepting(False)
        return True

    def caught_up(self) -> bool:
        """Look again; True when a paused worker may accept again (within a third of the threshold),
        or must: no live sibling accepts."""
        fewest = self.look()
        if self.board is None:
            return True
        if fewest is None or self.board.count - fewest <= pause_threshold(fewest) // 3:
            self.board.accepting(True)
            return True
        return False


def _unit_app() -> str | None:
    """The app's name when started by a sockact unit (SOCKACT_APP, SOCKACT_WORKER) and /dev/shm exists."""
    app, worker = os.environ.get(ENV_APP), os.environ.get(ENV_WORKER)
    return app if app and worker and os.path.isdir("/dev/shm") else None


def siblings_view() -> Callable[[], bool] | None:
    """others_serving for this worker's app, None outside a sockact unit."""
    app = _unit_app()
    if app is None:
        return None
    prefix = slot_prefix(app)
    return lambda: others_serving(prefix)


def for_this_worker() -> Scoreboard | None:
    """A scoreboard when started by a sockact unit and /dev/shm is usable."""
    app, worker = _unit_app(), os.environ.get(ENV_WORKER, "")
    if app is None:
        return None
    try:
        return Scoreboard(app, worker)
    except OSError as exc:
        # No room or no shared memory: the kernel's order decides, as without sockact. Said once,
        # since the worker never tries again.
        logger.warning(
            "serving without the /dev/shm scoreboard (%s): connections are not balanced "
            "across workers until this worker restarts",
            exc,
        )
        return None
