"""Worker logging: a bounded queue drained by one thread into the journal or stderr, never blocking serving.

A stopped or overwhelmed journald blocks whoever writes to it (measured with 2 workers logging on
every request: journald stopped for 8 s left 24 % of new connections unanswered, 8 s without an
answer). So no serving thread writes: records go into a bounded queue, a record that finds it full
is dropped and counted, and one daemon thread owns the real handler. Under the journal that handler
speaks journald's native protocol itself, from Python: systemd-python's sendv holds the GIL while it
blocks, which would freeze every thread of the worker.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import errno
import fcntl
import io
import logging
import os
import queue
import re
import socket
import struct
import sys
import threading
import weakref

from ..contract import ENV_APP, ENV_WORKER

# sd-daemon(3) priorities, as journald reads them from a "<N>" line prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_LEVEL = {2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}

_exiting = threading.Event()  # set by the exit hook below, which runs before logging's own shutdown
_queues: weakref.WeakSet[BoundedQueueHandler] = weakref.WeakSet()


@atexit.register  # atexit runs hooks last-registered first: logging's own was registered before
def _close_at_exit() -> None:
    # logging.shutdown closes only the handlers in its list, and dictConfig empties that list.
    _exiting.set()
    for handler in list(_queues):
        handler.close()


QUEUE_SIZE = 4096  # records waiting for the writer; beyond that they are dropped and counted
EXIT_FLUSH = 1.0  # seconds exit waits for waiting records: a stopped journald must not hold a stop up
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_SNDBUF = 8 << 20  # as sd_journal_send asks (the kernel caps it): large entries fit in one datagram


def priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class SdDaemonFormatter(logging.Formatter):
    """Prefix each line with <N> so journald stores the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines())


class BoundedQueueHandler(logging.Handler):
    """Hands records to one drain thread that owns `target`; never blocks the caller.

    With `capacity` records waiting a record is dropped and counted; the drain thread writes the
    count as one line once it has caught up. Closing (logging.shutdown at exit) waits at most
    `flush_deadline` for the waiting records."""

    def __init__(self, target: logging.Handler, capacity: int = QUEUE_SIZE, flush_deadline: float = EXIT_FLUSH) -> None:
        super().__init__()
        self.target = target
        self.capacity = capacity
        self.flush_deadline = flush_deadline
        self.queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self.dropped = 0
        self._drop_lock = threading.Lock()  # taken only when full: concurrent drops all count
        self._exc_formatter = logging.Formatter()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="sockact-log-writer", daemon=True)
        self._thread.start()
        _queues.add(self)
        # A forked serving process (sockact.runtime.respawn) has no writer thread of its own, and the
        # queue may have been copied mid-operation: it starts afresh with both.
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (handler := reference()) is not None and handler._after_fork())

    def _after_fork(self) -> bool:
        if self._closed:
            return False
        self.queue = queue.SimpleQueue()
        self.dropped = 0
        self._drop_lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="sockact-log-writer", daemon=True)
        self._thread.start()
        return True

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle would take this handler's lock around emit; the queue needs none.
        if not self.filter(record):
            return False
        if self._closed and not _exiting.is_set():
            self._reopen()
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self.queue.qsize() >= self.capacity:
            with self._drop_lock:
                self.dropped += 1
            return
        self.queue.put(self._prepare(record))

    def _prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Built now, as logging.handlers.QueueHandler does: arguments may change once the caller goes
        # on, and a traceback would keep its frames alive while the record waits.
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._exc_formatter.formatException(record.exc_info)
            record.exc_info = None
        return record

    def _drain(self) -> None:
        while (record := self.queue.get()) is not None:
            if self._write(record) and self.dropped and self.queue.empty():
                self._report_dropped()
        self._report_dropped()

    def _write(self, record: logging.LogRecord) -> bool:
        """Write one record; one the target failed to write counts as dropped (no traceback to
        stderr: under the journal that would come back here through this same queue)."""
        if self._emit(record):
            return True
        with self._drop_lock:
            self.dropped += 1
        return False

    def _emit(self, record: logging.LogRecord) -> bool:
        # emit, not handle: this thread is the target's only user, and its lock left free means
        # logging.shutdown never waits for a write stuck on a stopped journald.
        try:
            self.target.emit(record)
        except Exception:  # noqa: BLE001 - a failed write must not end the writer
            return False
        return True

    def _report_dropped(self) -> None:
        with self._drop_lock:
            count, self.dropped = self.dropped, 0
        if not count:
            return
        line = logging.LogRecord(
            "sockact.runtime",
            logging.WARNING,
            __file__,
            0,
            f"{count} log records dropped (journal not keeping up)",
            None,
            None,
        )
        if not self._emit(line):
            with self._drop_lock:
                self.dropped += count  # said later, once a write succeeds again

    def _reopen(self) -> None:
        # logging.config.dictConfig (Django's setup calls it, as many apps do) closes every handler it
        # finds, even the root's that it then leaves in place: every later record, print() and
        # traceback would wait in a queue nobody drains. A record after such a close starts the
        # writer again; only the exit's close is final.
        with self._drop_lock:
            if self._closed and not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._drain, name="sockact-log-writer", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Write what waits, within flush_deadline, and end the writer; logging.shutdown calls it at exit."""
        self._closed = True
        if self._thread.is_alive():
            self.queue.put(None)
            self._thread.join(self.flush_deadline)
        super().close()


class FdHandler(logging.Handler):
    """Formatted lines written straight to a file descriptor with os.write: a write stuck on a full
    pipe or a stopped journald holds no lock of sys.stderr's buffered stream, which other threads
    and the interpreter's final flush take."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        data = memoryview((self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(self.fd, data) :]


def _field(name: bytes, value: str) -> bytes:
    """One journal field in the native protocol: NAME=value, or NAME, length, value when multi-line."""
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" in data:
        return name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    """Records as journal entries over journald's native protocol (systemd.journal-fields(7)), with the
    fields systemd-python's JournalHandler sends. The send is a Python socket call, so a send blocked
    on a stopped journald releases the GIL; it blocks only the drain thread."""

    def __init__(self, fields: dict[str, str], path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.constant = b"".join(_field(key.encode(), value) for key, value in fields.items())
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def emit(self, record: logging.LogRecord) -> None:
        self._send(
            b"".join(
                (
                    _field(b"MESSAGE", self.format(record)),
                    b"PRIORITY=%d\n" % priority(record.levelno),
                    _field(b"LOGGER", record.name),
                    _field(b"THREAD_NAME", record.threadName or ""),
                    _field(b"CODE_FILE", record.pathname),
                    b"CODE_LINE=%d\n" % record.lineno,
                    _field(b"CODE_FUNC", record.funcName or ""),
                    self.constant,
                )
            )
        )

    def _send(self, entry: bytes) -> None:
        try:
            self.sock.send(entry)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                self._send_memfd(entry)
            elif exc.errno in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EBADF):
                # journald restarted (its socket is a new one), or an earlier reconnect failed.
                self.sock.close()
                self.sock = self._connect()
                self.sock.send(entry)
            else:
                raise

    def _send_memfd(self, entry: bytes) -> None:
        """An entry too big for one datagram goes as a sealed memfd, as sd_journal_send does."""
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, entry)
            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            )
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            os.close(fd)


_SD_PREFIX = re.compile(r"<([0-7])>")
_LONGEST_LINE = 8192


class QueuedLines(io.TextIOBase):
    """sys.stdout or sys.stderr under the journal: whole lines become records of the queue, so a
    print(), a traceback printed by a thread, a warning, or an app writing to wsgi.errors never
    blocks on journald. A line's own "<N>" prefix sets its priority; others get journald's default
    for a service's output, info."""

    def __init__(self, handler: logging.Handler, fd: int, name: str) -> None:
        super().__init__()
        self.handler = handler
        self.fd = fd
        self.logger_name = name
        self._partial = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd  # for faulthandler and the like, which write there directly

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > _LONGEST_LINE:  # output that never ends a line still gets out
                lines.append(self._partial)
                self._partial = ""
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        level = logging.INFO
        prefix = _SD_PREFIX.match(line)
        if prefix:
            level, line = _LEVEL[int(prefix.group(1))], line[prefix.end() :]
        self.handler.handle(logging.LogRecord(self.logger_name, level, "", 0, line, None, None))


def under_journal() -> bool:
    """True when stderr is the journal stream systemd set up (JOURNAL_STREAM=dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def journal_handler() -> logging.Handler | None:
    """A JournalHandler with SYSLOG_IDENTIFIER and SOCKACT_APP/SOCKACT_WORKER fields; None when
    journald's socket cannot be reached."""
    fields = {"SYSLOG_IDENTIFIER": _identifier()}
    fields.update({key: os.environ[key] for key in (ENV_APP, ENV_WORKER) if key in os.environ})
    try:
        return JournalHandler(fields)
    except OSError:
        return None


def _identifier() -> str:
    app, worker = os.environ.get(ENV_APP), os.environ.get(ENV_WORKER)
    return f"{app}@{worker}" if app and worker else "sockact"


def _target(journal: bool) -> logging.Handler:
    handler: logging.Handler | None = journal_handler() if journal else None
    if handler is None:
        handler = FdHandler(2)
        if journal:
            handler.setFormatter(SdDaemonFormatter("%(name)s: %(message)s"))
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _to_std_stream(handler: logging.Handler) -> bool:
    """True for a handler that writes to the worker's stdout or stderr (whatever they are now: the
    journal's QueuedLines, or fd 1/2 on a terminal), not for a file or a socket."""
    if type(handler) is not logging.StreamHandler:  # FileHandler and others are StreamHandler subclasses
        return False
    stream = getattr(handler, "stream", None)
    if isinstance(stream, QueuedLines) or stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        return True
    try:
        return stream is not None and stream.fileno() in (1, 2)
    except (OSError, ValueError, AttributeError):
        return False


def skip_echoed(record: logging.LogRecord) -> bool:
    """The root's filter: False for a record that a handler of its own logger, or of an ancestor below
    the root, already writes to stdout/stderr, which end up in the same journal. Django's default
    logging puts a console handler on "django" (with DEBUG on) that would otherwise put every
    django.* record there twice. The walk follows propagation exactly as Logger.callHandlers does."""
    logger = logging.Logger.manager.loggerDict.get(record.name)
    while isinstance(logger, logging.Logger) and logger.parent is not None:
        for handler in logger.handlers:
            if record.levelno >= handler.level and _to_std_stream(handler) and handler.filter(record):
                return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    # uvicorn's protocols test their logger's own level, not the effective one, before preparing a
    # trace line on every connection made and lost: an unset level (0) means that work each time.
    # uvicorn adds no handlers of its own (log_config=None): its loggers propagate to the root's queue.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)  # warnings.warn would otherwise write to stderr from the caller
    journal = under_journal()
    for previous in root.handlers:
        previous.close()  # a second setup: the earlier writer finishes first
    handler = BoundedQueueHandler(_target(journal))
    handler.addFilter(skip_echoed)
    root.handlers[:] = [handler]
    if journal:
        sys.stdout, sys.stderr = QueuedLines(handler, 1, "stdout"), QueuedLines(handler, 2, "stderr")
