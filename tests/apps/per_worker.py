"""Two hit counters: one in the worker's memory, one in a SQLite file every worker shares.

Run as N workers, the first counts only the requests its own worker served; the second counts every
request. docs/app-authors.md shows this file as it is; tests/systemd/test_app_authors.py runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

# In memory: every worker process has its own copy, starting from 0 (and again after each restart).
hits_in_memory = 0
lock = threading.Lock()  # one worker serves WSGI requests on several threads

# On disk: one file for every worker. With --state-dir NAME, $STATE_DIRECTORY is /var/lib/NAME,
# writable by the workers' user and kept across restarts.
DATABASE = os.path.join(os.environ.get("STATE_DIRECTORY", "."), "hits.sqlite3")


def count_in_memory() -> int:
    global hits_in_memory
    with lock:
        hits_in_memory += 1
        return hits_in_memory


def count_shared() -> int:
    # timeout: wait while another worker holds the write lock instead of failing at once.
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        # One statement reads and writes, so two workers can never both read the same value.
        rows = db.execute(
            "INSERT INTO hits VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1 RETURNING n"
        ).fetchall()
    return int(rows[0][0])


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "worker": os.environ.get("SOCKACT_WORKER", "-"),  # set by the generated unit: 1 … N
            "in_memory": count_in_memory(),
            "shared": count_shared(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
