"""Helpers for tests that run units inside the private systemd from sockact.testing."""

from __future__ import annotations

import json
import sys
import textwrap

from helpers import sockact

from sockact.testing import PrivateSystemd


def install_units(box: PrivateSystemd, name: str, *options: str) -> None:
    """Render units with the CLI straight into the box's /run/systemd/system, then daemon-reload."""
    result = sockact("generate", name, *options, "--python", sys.executable, "--output-dir", str(box.unit_dir()))
    assert result.returncode == 0, result.stderr
    box.daemon_reload()


def http_get(box: PrivateSystemd, url: str, *curl_args: str, timeout: float = 20) -> str:
    result = box.run("curl", "-sS", "--fail", "--max-time", str(timeout), *curl_args, url, timeout=timeout + 5)
    return result.stdout


CONCURRENT = textwrap.dedent("""
    import http.client, json, sys, threading
    host, port, path, total, parallel = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    answers, errors, lock = [], [], threading.Lock()
    def client(n):
        for _ in range(n):
            try:
                conn = http.client.HTTPConnection(host, port, timeout=20)
                conn.request("GET", path, headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode()
                with lock:
                    answers.append([response.status, body.split()[1]])
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
    threads = [threading.Thread(target=client, args=(total // parallel,)) for _ in range(parallel)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps({"answers": answers, "errors": errors}))
""")


def concurrent_get(box: PrivateSystemd, port: int, path: str, total: int, parallel: int,
                   host: str = "127.0.0.1") -> dict[str, list[object]]:
    """Requests from `parallel` clients at once, each on a new connection; which worker answered each."""
    out = box.run(sys.executable, "-c", CONCURRENT, host, str(port), path, str(total), str(parallel), timeout=120)
    result: dict[str, list[object]] = json.loads(out.stdout)
    return result


def instance_states(box: PrivateSystemd, name: str, workers: int) -> list[str]:
    return [box.show(f"{name}@{i}.service", "ActiveState")["ActiveState"] for i in range(1, workers + 1)]


def parse_wrk(output: str) -> dict[str, int]:
    """requests, socket errors (connect/read/write/timeout) and non-2xx counts from wrk's report."""
    import re

    found = re.search(r"(\d+) requests in", output)
    assert found, output
    result = {"requests": int(found.group(1)), "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        for key, value in zip(("connect", "read", "write", "timeout"), errors.groups()):
            result[key] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        result["non2xx"] = int(non2xx.group(1))
    return result


def failures(stats: dict[str, int]) -> int:
    return sum(stats[key] for key in ("connect", "read", "write", "timeout", "non2xx"))


def served_counts(box: PrivateSystemd, name: str, workers: int) -> list[int]:
    """Requests each worker has served, from its STATUS= line (updated every second)."""
    import re

    counts = []
    for i in range(1, workers + 1):
        text = box.show(f"{name}@{i}.service", "StatusText")["StatusText"]
        found = re.search(r"serving: (\d+) requests", text)
        counts.append(int(found.group(1)) if found else 0)
    return counts
