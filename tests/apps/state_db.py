"""A WSGI app whose workers read and write a sqlite file in $STATE_DIRECTORY, the file `sockact exec`
creates first, as `manage.py migrate` would (tests/systemd/test_exec.py)."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Callable


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = os.path.join(os.environ["STATE_DIRECTORY"], "db.sqlite3")
    try:
        with sqlite3.connect(path) as db:  # commits on leaving the block
            notes = [row[0] for row in db.execute("SELECT note FROM notes ORDER BY rowid")]
            db.execute("INSERT INTO notes VALUES ('worker')")
        seen: dict[str, object] = {"notes": notes}
    except sqlite3.Error as exc:
        seen = {"error": str(exc)}
    seen.update(uid=os.getuid(), gid=os.getgid(), cwd=os.getcwd())
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
