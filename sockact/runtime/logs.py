"""Worker logging: to the journal with PRIORITY and worker fields, or stderr with sd-daemon prefixes."""

from __future__ import annotations

import logging
import os
import sys

# sd-daemon(3) priorities, as journald reads them from a "<N>" line prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


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


def under_journal() -> bool:
    """True when stderr is the journal stream systemd set up (JOURNAL_STREAM=dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def journal_handler() -> logging.Handler | None:
    """systemd-python's JournalHandler with SOCKACT_APP/SOCKACT_WORKER fields, when installed."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    fields = {key: os.environ[key] for key in ("SOCKACT_APP", "SOCKACT_WORKER") if key in os.environ}
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=_identifier(), **fields)
    return handler


def _identifier() -> str:
    app, worker = os.environ.get("SOCKACT_APP"), os.environ.get("SOCKACT_WORKER")
    return f"{app}@{worker}" if app and worker else "sockact"


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    # uvicorn's protocols test their logger's own level, not the effective one, before preparing a
    # trace line on every connection made and lost: an unset level (0) means that work each time.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)
    # waitress warns "Task queue depth is N" on every request queued while all threads are busy:
    # under load that is a journal line per request, costing the worker and journald CPU. The depth
    # requests waiting for a thread count in STATUS='s "in flight" (`sockact status`) instead;
    # --log-level debug shows the lines again.
    logging.getLogger("waitress.queue").setLevel(level if level <= logging.DEBUG else logging.ERROR)
    handler: logging.Handler | None = journal_handler() if under_journal() else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        if under_journal():
            handler.setFormatter(SdDaemonFormatter("%(name)s: %(message)s"))
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
