"""docs/app-authors.md on a real (private) systemd: its example app as 2 workers.

The page shows tests/apps/per_worker.py as it is (checked here), and the figures it speaks of are the
ones this test measures: a counter kept in memory splits across the workers (and starts again after
a restart), a counter kept in a SQLite file in $STATE_DIRECTORY counts every request.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxutil import http_get, install_units, instance_states
from helpers import APPS, REPO

from sockact.box import PrivateSystemd

PAGE = REPO / "docs" / "app-authors.md"
APP = APPS / "per_worker.py"
NAME, PORT, STATE, WORKERS = "perworker", 8361, "perworker-test", 2

# Requests from several clients at once, each on a new connection, as visitors arrive; prints the answers.
CLIENTS = """
import http.client, json, sys, threading
port, total, parallel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
answers, lock = [], threading.Lock()
def client():
    for _ in range(total // parallel):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.status == 200, response.status
        with lock:
            answers.append(json.loads(response.read()))
threads = [threading.Thread(target=client) for _ in range(parallel)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(answers))
"""


def code_block_after(text: str, marker: str) -> str:
    """The first ```python block after marker."""
    return text.split(marker, 1)[1].split("```python\n", 1)[1].split("```\n", 1)[0]


def test_the_page_shows_the_example_as_it_is() -> None:
    shown = code_block_after(PAGE.read_text(), "<!-- tests/apps/per_worker.py -->")
    assert shown == APP.read_text(), "docs/app-authors.md: paste tests/apps/per_worker.py into its code block again"


def remove_state() -> None:
    """The box's /var is the host's: start from no state directory and leave none behind."""
    for leftover in (Path("/var/lib") / STATE, Path("/var/lib/private") / STATE):
        if leftover.is_symlink():
            leftover.unlink()
        elif leftover.exists():
            shutil.rmtree(leftover)


@pytest.fixture
def app(private_systemd: PrivateSystemd, shared_apps: Path) -> Iterator[PrivateSystemd]:
    box = private_systemd
    remove_state()
    install_units(
        box,
        NAME,
        "--app",
        "per_worker:application",
        "--listen",
        f"127.0.0.1:{PORT}",
        "--workers",
        str(WORKERS),
        "--chdir",
        str(shared_apps),
        "--state-dir",
        STATE,
    )
    try:
        box.systemctl("start", f"{NAME}.socket")
        http_get(box, f"http://127.0.0.1:{PORT}/")  # the first connection starts every worker
        box.wait_for(lambda: instance_states(box, NAME, WORKERS) == ["active"] * WORKERS, what="workers active")
        yield box
    finally:
        box.systemctl("stop", f"{NAME}.socket", f"{NAME}.target", check=False)
        remove_state()


def visit(box: PrivateSystemd, total: int, parallel: int = 4) -> list[dict[str, object]]:
    out = box.run(sys.executable, "-c", CLIENTS, str(PORT), str(total), str(parallel), timeout=120).stdout
    answers: list[dict[str, object]] = json.loads(out)
    assert len(answers) == total
    return answers


def highest_per_worker(answers: list[dict[str, object]]) -> dict[str, int]:
    highest: dict[str, int] = {}
    for answer in answers:
        worker, count = str(answer["worker"]), int(str(answer["in_memory"]))
        highest[worker] = max(highest.get(worker, 0), count)
    return highest


def test_in_memory_state_splits_across_workers_and_the_shared_file_counts_every_request(app: PrivateSystemd) -> None:
    box, total = app, 200
    answers = visit(box, total)
    served = Counter(str(answer["worker"]) for answer in answers)
    in_memory = highest_per_worker(answers)
    shared = sorted(int(str(answer["shared"])) for answer in answers)
    first = 1  # the request that started the workers
    print(
        f"\n{total} requests from 4 clients on {WORKERS} workers: served {dict(sorted(served.items()))}; "
        f"in-memory counter per worker {dict(sorted(in_memory.items()))} (highest seen); "
        f"shared SQLite counter {shared[-1]} (after {first} request that started the workers)"
    )
    assert sorted(served) == [str(k) for k in range(1, WORKERS + 1)], served  # both workers served
    # Each in-memory counter saw only its own worker's requests: none reached the total.
    assert all(count < total for count in in_memory.values()), in_memory
    assert sum(in_memory.values()) == total + first, in_memory
    # The shared counter gave every request its own number, and the last one is the total.
    assert shared == list(range(first + 1, first + total + 1)), shared[:5]

    box.systemctl("restart", f"{NAME}.target")  # as a deploy does
    box.wait_for(lambda: instance_states(box, NAME, WORKERS) == ["active"] * WORKERS, what="workers back")
    again = visit(box, 40)
    in_memory_after = highest_per_worker(again)
    shared_after = max(int(str(answer["shared"])) for answer in again)
    print(
        f"after systemctl restart {NAME}.target, 40 more requests: in-memory counters "
        f"{dict(sorted(in_memory_after.items()))} (started again from 0), shared {shared_after}"
    )
    assert sum(in_memory_after.values()) == 40, in_memory_after
    assert shared_after == first + total + 40
