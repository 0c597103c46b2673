"""`sockact run --respawn`: the unit's main process forks the serving process, and forks it again at
once when it crashes while serving.

systemd restarts a crashed worker too, but a restart is a new process: the sandbox set up again,
Python started, the runtime imported (measured: 0.35-0.55 s from the crash to READY=1 on 2 cores).
Hit 100 times in 30 s by a URL that kills its worker, two workers were then often down together, and
2-10 % of new visitors were reset. gunicorn's arbiter answers the same crash with a fork of a process
that has the server loaded; this does the same inside each worker unit, so systemd stays the
supervisor of the units and this parent only repairs its one serving process:

- the parent adopts the sockets systemd passed, forks the serving process and waits; it serves
  nothing and starts no event loop. Once it must fork again it first loads the engine the serving
  process said it runs, so that later forks start with it loaded (about 0.1 s sooner). It does not
  load it before: while nothing crashes the parent stays small (measured PSS: parent 7.5 MB,
  serving process 21 MB; 14 and 17 MB with the engine loaded in both, as refcounts unshare the
  pages). The app itself is imported by each serving process, as gunicorn does without --preload;
- a serving process that dies after READY=1, or leaves to recycle (exit 4), is forked again at
  once, with one line in the journal; one that dies before READY=1 is a boot failure (the runtime's
  exit 3, spaced out by sockact.runtime.boot), and the unit exits with it for systemd to restart;
- SIGTERM and SIGINT go to the serving process, which drains; the unit exits with its status.
  SIGABRT (systemd's watchdog) goes to it too, so faulthandler writes its stack to the journal.

The serving process sends READY=1, WATCHDOG=1 and STATUS= itself: the unit needs NotifyAccess=all.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable

from ..contract import ENV_REPLACED, EXIT_CANNOT_START
from . import boot
from .notify import Notifier

logger = logging.getLogger("sockact.runtime")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGABRT)
RECYCLE_EXIT = 4  # sockact.runtime.recycle.RECYCLE_EXIT, without importing it here
ABORT_GRACE = 3.0  # seconds the serving process gets to write its stack after SIGABRT


def describe(status: int) -> str:
    """'exit 1', 'SIGSEGV' from a waitpid status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


class Parent:
    def __init__(self, serve: Callable[[], int], notifier: Notifier) -> None:
        self.serve = serve
        self.notifier = notifier
        self.child = 0
        self.stopping = False
        self.replaced = 0
        self.engine = ""  # the module the serving processes run, once one said so

    def run(self) -> int:
        original = signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
        while True:
            ready_r, ready_w = os.pipe()
            gc.freeze()  # what the parent holds stays shared: the child's collector never writes to it
            self.child = os.fork()
            if self.child == 0:
                os.close(ready_r)
                self._in_child(ready_w, original)
            os.close(ready_w)
            started = time.monotonic()
            status = self._wait()
            ready, engine = self._ready(ready_r)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping or (not ready and code == EXIT_CANNOT_START):
                return self._leave(status)
            if not ready:
                boot.failed(
                    f"cannot start: the serving process died before it was ready ({describe(status)})", self.notifier
                )
                return EXIT_CANNOT_START
            if code == 0:
                return 0
            self.replaced += 1
            if code == RECYCLE_EXIT:
                logger.info("serving process %d recycled (exit 4); forking a new one", self.child)
            else:
                logger.error(
                    "serving process %d died (%s) %.1f s after it started; forking a new one (%d replaced so far)",
                    self.child,
                    describe(status),
                    time.monotonic() - started,
                    self.replaced,
                )
            self._preload(engine)

    @staticmethod
    def _leave(status: int) -> int:
        """The unit's exit status from the serving process's. Killed by SIGTERM or SIGINT (stopped
        before its engine took over the signals), this process dies of the same signal, which systemd
        counts as a clean stop; any other signal becomes 128 + its number."""
        if not os.WIFSIGNALED(status):
            return max(os.waitstatus_to_exitcode(status), 0)
        number = os.WTERMSIG(status)
        if number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
            os.kill(os.getpid(), number)
        return 128 + number

    def _in_child(self, ready_w: int, mask: set[int | signal.Signals]) -> None:
        """Runs in the forked process and never returns."""
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.environ["WATCHDOG_PID"] = str(os.getpid())  # sd_watchdog_enabled(3) asks for our own pid
            os.environ[ENV_REPLACED] = str(self.replaced)  # STATUS= says it, `sockact status` counts it
            boot.report_ready_to(ready_w)
            code = self.serve()
        except BaseException:
            logger.exception("the serving process failed")
        finally:
            logging.shutdown()  # the queued records, within a deadline
            os._exit(code)

    def _wait(self) -> int:
        """Until the serving process exits; forwards the signals systemd sends the unit."""
        abort_deadline: float | None = None
        while True:
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                return status
            timeout = 1.0 if abort_deadline is None else max(0.0, abort_deadline - time.monotonic())
            info = signal.sigtimedwait({*FORWARDED, signal.SIGCHLD}, timeout)
            if info is not None and info.si_signo != signal.SIGCHLD:
                self.stopping = True
                os.kill(self.child, info.si_signo)
                if info.si_signo == signal.SIGABRT and abort_deadline is None:
                    abort_deadline = time.monotonic() + ABORT_GRACE
            elif abort_deadline is not None and time.monotonic() >= abort_deadline:
                os.kill(self.child, signal.SIGKILL)

    @staticmethod
    def _ready(ready_r: int) -> tuple[bool, str]:
        """Whether the serving process reached READY=1, and which engine module it said it runs."""
        # Non-blocking: a process the app forked may still hold the write end open.
        os.set_blocking(ready_r, False)
        try:
            said = os.read(ready_r, 512).decode("ascii", "replace")
        except BlockingIOError:
            said = ""
        finally:
            os.close(ready_r)
        return said.startswith("R"), said[1:].strip()

    def _preload(self, engine: str) -> None:
        if engine and engine != self.engine and engine.startswith("sockact.runtime."):
            self.engine = engine
            try:
                importlib.import_module(engine)
            except Exception as exc:  # noqa: BLE001 - only a head start lost: the next process imports it
                logger.debug("cannot load %s ahead of the next serving process: %s", engine, exc)


def supervise(serve: Callable[[], int], notifier: Notifier) -> int:
    return Parent(serve, notifier).run()
