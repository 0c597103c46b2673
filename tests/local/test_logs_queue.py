"""Worker logging without systemd: the bounded queue never blocks, drops and counts; the journal protocol."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockact.runtime import logs


class BlockedTarget(logging.Handler):
    """A writer stuck like one on a stopped journald, until `unblock` is set (not `release`: Handler's lock
    method has that name)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.unblock.wait()
        self.written.append(record.getMessage())


@pytest.fixture
def blocked() -> Iterator[BlockedTarget]:
    target = BlockedTarget()
    yield target
    target.unblock.set()


def wait_until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, message, args, None)


def test_a_blocked_writer_never_blocks_the_producer_and_drops_are_counted_then_said(blocked: BlockedTarget) -> None:
    handler = logs.BoundedQueueHandler(blocked, capacity=100)
    handler.handle(record("first"))
    assert blocked.entered.wait(5)  # the writer now holds "first" and is stuck
    began = time.perf_counter()
    for i in range(10_100):
        handler.handle(record("record %d", i))
    elapsed = time.perf_counter() - began
    print(f"\n10,100 records against a stuck writer: {elapsed * 1e6 / 10_100:.1f} us each, {handler.dropped} dropped")
    assert elapsed < 2.0  # would never return were it blocking
    assert handler.dropped == 10_000  # 100 wait in the queue, the rest were dropped
    blocked.unblock.set()
    wait_until(lambda: len(blocked.written) == 102)
    assert blocked.written[:2] == ["first", "record 0"] and blocked.written[100] == "record 99"
    assert blocked.written[101] == "10000 log records dropped (journal not keeping up)"
    assert handler.dropped == 0
    handler.close()


def test_producers_on_many_threads_lose_no_count(blocked: BlockedTarget) -> None:
    handler = logs.BoundedQueueHandler(blocked, capacity=10)
    handler.handle(record("first"))
    assert blocked.entered.wait(5)

    def produce() -> None:
        for _ in range(2_000):
            handler.handle(record("x"))

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    queued = handler.queue.qsize()
    assert handler.dropped + queued == 16_000
    blocked.unblock.set()
    wait_until(lambda: blocked.written[-1:] == [f"{16_000 - queued} log records dropped (journal not keeping up)"])
    handler.close()


def test_a_failing_writer_counts_its_failures_and_says_so_once_it_writes_again() -> None:
    written: list[str] = []
    failing = threading.Event()
    failing.set()

    class Flaky(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if failing.is_set():
                raise OSError("journal gone")
            written.append(record.getMessage())

    handler = logs.BoundedQueueHandler(Flaky())
    for i in range(3):
        handler.handle(record("lost %d", i))
    wait_until(lambda: handler.queue.empty() and handler.dropped == 3)
    failing.clear()
    handler.handle(record("back"))
    wait_until(lambda: len(written) == 2)
    assert written == ["back", "3 log records dropped (journal not keeping up)"]
    handler.close()


def test_close_gives_up_after_its_deadline_on_a_stuck_writer(blocked: BlockedTarget) -> None:
    handler = logs.BoundedQueueHandler(blocked, flush_deadline=0.3)
    handler.handle(record("stuck"))
    assert blocked.entered.wait(5)
    began = time.monotonic()
    handler.close()
    assert 0.25 < time.monotonic() - began < 2


def test_the_message_is_built_when_logged_not_when_written(blocked: BlockedTarget) -> None:
    handler = logs.BoundedQueueHandler(blocked)
    handler.handle(record("first"))
    assert blocked.entered.wait(5)
    changing = ["before"]
    handler.handle(record("%s", changing))
    changing[0] = "after"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    handler.handle(failed)
    assert failed.exc_info is None and failed.exc_text is not None and "ValueError: boom" in failed.exc_text
    blocked.unblock.set()
    wait_until(lambda: len(blocked.written) == 3)
    assert blocked.written[1] == "['before']"
    handler.close()


EXITING = textwrap.dedent("""
    import logging, sys
    from sockact.runtime import logs
    logs.setup(logging.INFO)
    log = logging.getLogger("app")
    for i in range(int(sys.argv[1])):
        log.info("line %d %s", i, "x" * 200)
""")


def test_records_waiting_at_a_normal_exit_are_written() -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXITING, "2000"], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if " app: line " in line]
    assert len(lines) == 2000 and lines[-1].split()[5] == "1999"


def test_exit_is_not_held_up_by_a_stderr_nobody_reads() -> None:
    # 1,000 lines of 250 bytes fill the pipe (64 KB) that this test reads only after the exit.
    proc = subprocess.Popen([sys.executable, "-c", EXITING, "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    began = time.monotonic()
    try:
        proc.wait(timeout=15)
    finally:
        proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    exited_after = time.monotonic() - began
    print(f"\nexit with a full, unread stderr pipe took {exited_after:.2f} s (flush deadline {logs.EXIT_FLUSH} s)")
    assert proc.returncode == 0  # no abort on a stderr lock held by the stuck writer
    assert exited_after < logs.EXIT_FLUSH + 5


def journal_fields(entry: bytes) -> dict[str, str]:
    """Decode one native-protocol entry (systemd's journal-native format)."""
    fields, rest = {}, entry
    while rest:
        line, _, tail = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = tail
        else:
            (size,) = struct.unpack("<Q", tail[:8])
            fields[line.decode()] = tail[8 : 8 + size].decode()
            rest = tail[9 + size :]
    return fields


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "journal.socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()


def test_journal_entries_carry_priority_worker_fields_and_multiline_messages(
    journal_socket: tuple[str, socket.socket],
) -> None:
    path, server = journal_socket
    handler = logs.JournalHandler({"SYSLOG_IDENTIFIER": "app@2", "SOCKACT_WORKER": "2"}, path=path)
    handler.emit(logging.LogRecord("app.db", logging.ERROR, "/srv/app/db.py", 42, "two\nlines", None, None))
    fields = journal_fields(server.recv(65536))
    assert fields["MESSAGE"] == "two\nlines" and fields["PRIORITY"] == "3"
    assert fields["LOGGER"] == "app.db" and fields["CODE_FILE"] == "/srv/app/db.py" and fields["CODE_LINE"] == "42"
    assert fields["SYSLOG_IDENTIFIER"] == "app@2" and fields["SOCKACT_WORKER"] == "2"


def test_a_journal_entry_too_big_for_a_datagram_goes_as_a_sealed_memfd(
    journal_socket: tuple[str, socket.socket],
) -> None:
    path, server = journal_socket
    handler = logs.JournalHandler({}, path=path)
    big = "y" * handler.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)  # above the largest datagram
    handler.emit(logging.LogRecord("app", logging.INFO, "", 0, big, None, None))
    data, ancillary, _, _ = server.recvmsg(65536, socket.CMSG_SPACE(4))
    assert data == b"" and ancillary
    fds = array.array("i")
    fds.frombytes(ancillary[0][2][:4])
    with os.fdopen(fds[0], "rb") as memfd:
        memfd.seek(0)  # journald maps it; the offset is the writer's
        assert journal_fields(memfd.read())["MESSAGE"] == big


def test_the_journal_handler_reconnects_to_a_restarted_journald(journal_socket: tuple[str, socket.socket]) -> None:
    path, server = journal_socket
    handler = logs.JournalHandler({}, path=path)
    server.close()
    os.unlink(path)
    with pytest.raises(OSError):
        handler.emit(record("while journald is away"))  # counted as dropped by the queue handler
    restarted = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    restarted.bind(path)
    restarted.settimeout(5)
    with restarted:
        handler.emit(record("back"))
        assert journal_fields(restarted.recv(65536))["MESSAGE"] == "back"


def test_a_journal_that_reads_nothing_never_blocks_the_producer(journal_socket: tuple[str, socket.socket]) -> None:
    path, _server = journal_socket  # bound, never read: sends block once its queue is full
    handler = logs.BoundedQueueHandler(logs.JournalHandler({}, path=path), capacity=50)
    began = time.perf_counter()
    for i in range(5_000):
        handler.handle(record("record %d", i))
    assert time.perf_counter() - began < 2.0
    assert handler.dropped > 0


def test_stderr_lines_become_records_with_their_sd_daemon_priority(blocked: BlockedTarget) -> None:
    blocked.unblock.set()
    seen: list[tuple[int, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.levelno, record.getMessage()))

    handler = logs.BoundedQueueHandler(Collect())
    stream = logs.QueuedLines(handler, 2, "stderr")
    stream.write("Traceback (most recent call last):\n  File")
    stream.write(' "x.py"\n<3>failed\n')
    stream.write("." * 10_000)  # a progress bar that never ends its line still gets out
    wait_until(lambda: len(seen) == 4)
    assert seen == [
        (logging.INFO, "Traceback (most recent call last):"),
        (logging.INFO, '  File "x.py"'),
        (logging.ERROR, "failed"),
        (logging.INFO, "." * 10_000),
    ]
    handler.close()


DJANGO_LOGGING = textwrap.dedent("""
    import logging, sys
    from sockact.runtime import logs
    logs.setup()  # as the worker does, before the app is imported
    import django
    from django.conf import settings
    settings.configure(DEBUG=sys.argv[1] == "debug")
    django.setup()  # applies Django's DEFAULT_LOGGING: a console handler on "django" when DEBUG is on
    logging.getLogger("django.request").warning("django-record")
    own = logging.getLogger("myapp")
    own.addHandler(logging.StreamHandler())  # an app's own console handler, propagating too
    own.warning("own-console-record")
    filed = logging.getLogger("filed")
    filed.addHandler(logging.FileHandler(sys.argv[2]))  # a file is not the journal: the root still writes
    filed.warning("file-record")
    logging.getLogger("quiet.child").warning("plain-record")
""")


@pytest.mark.parametrize("debug", ["debug", "nodebug"])
def test_after_djangos_logging_setup_every_record_is_written_once(debug: str, tmp_path: Path) -> None:
    # django.setup() runs logging.config.dictConfig, which closes every handler it finds, the root's
    # queue too: before sockact reopened it, every later record (and print) was lost. And with DEBUG on,
    # Django's console handler writes each django.* record to stderr, which is the journal already.
    pytest.importorskip("django")
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_LOGGING, debug, str(tmp_path / "file.log")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    counts = {
        word: result.stderr.count(word)
        for word in ("django-record", "own-console-record", "file-record", "plain-record")
    }
    print(f"\nDEBUG {debug}: lines per record on stderr {counts}")
    assert counts == {"django-record": 1, "own-console-record": 1, "file-record": 1, "plain-record": 1}
    assert (tmp_path / "file.log").read_text().count("file-record") == 1
