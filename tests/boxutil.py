"""Helpers for tests that run units inside the private systemd (sockact.box)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any, TypedDict

from helpers import sockact

from sockact.box import PrivateSystemd


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


class Answered(TypedDict):
    """What concurrent_get's clients saw: (status, worker) per answer, each failure's repr."""

    answers: list[tuple[int, str]]
    errors: list[str]


def concurrent_get(
    box: PrivateSystemd, port: int, path: str, total: int, parallel: int, host: str = "127.0.0.1"
) -> Answered:
    """Requests from `parallel` clients at once, each on a new connection; which worker answered each."""
    out = box.run(sys.executable, "-c", CONCURRENT, host, str(port), path, str(total), str(parallel), timeout=120)
    seen = json.loads(out.stdout)
    return {"answers": [(status, worker) for status, worker in seen["answers"]], "errors": seen["errors"]}


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


PROBE = textwrap.dedent("""
    import json, socket, sys, time
    host, port, seconds, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    results = []  # [seconds since start, answered, seconds taken, error]
    began = time.monotonic()
    request = f"GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode()
    print("probing", flush=True)
    while time.monotonic() - began < seconds:
        sent = time.monotonic()
        answered, error = False, ""
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(request)
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
                answered = reply.startswith(b"HTTP/1.1 200")
                error = "" if answered else f"reply {reply[:20]!r}"
        except OSError as exc:
            error = repr(exc)
        results.append([round(sent - began, 3), answered, round(time.monotonic() - sent, 3), error])
        time.sleep(max(0.0, sent + every - time.monotonic()))
    print(json.dumps(results), flush=True)
""")


class Probe:
    """What a new visitor sees: a new connection and one GET every 0.1 s (2 s timeout), from inside the box."""

    def __init__(self, box: PrivateSystemd, port: int, seconds: float, every: float = 0.1) -> None:
        self.process = box.popen(
            sys.executable,
            "-c",
            PROBE,
            "127.0.0.1",
            str(port),
            str(seconds),
            str(every),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "probing"

    def result(self) -> ProbeResult:
        out, _ = self.process.communicate(timeout=120)
        return ProbeResult(json.loads(out.splitlines()[-1]))


class ProbeResult:
    def __init__(self, results: list[list[Any]]) -> None:  # JSON rows: [seconds, ok, ...]
        self.results = results
        self.total = len(results)
        self.answered = sum(1 for _, ok, *_ in results if ok)

    @property
    def share(self) -> float:
        return self.answered / max(1, self.total)

    def longest_outage(self) -> float:
        """Seconds from the first to the last probe of the longest run of unanswered ones (0 if none)."""
        longest, start = 0.0, None
        for at, ok, *_ in self.results:
            if not ok and start is None:
                start = float(at)
            if ok and start is not None:
                longest, start = max(longest, float(at) - start), None
        if start is not None:
            longest = max(longest, float(self.results[-1][0]) - start)
        return longest

    def failures(self) -> list[list[object]]:
        return [result for result in self.results if not result[1]]

    def __str__(self) -> str:
        return (
            f"{self.answered} of {self.total} probes answered ({self.share:.1%}), "
            f"longest outage {self.longest_outage():.1f} s"
        )


def serving_pid(box: PrivateSystemd, unit: str) -> str:
    """The serving process of a worker unit: the child its main process forked (sockact run --respawn)."""
    main = box.show(unit, "MainPID")["MainPID"]
    if main == "0":
        return "0"
    children = box.run("cat", f"/proc/{main}/task/{main}/children", check=False).stdout.split()
    return children[0] if children else "0"
