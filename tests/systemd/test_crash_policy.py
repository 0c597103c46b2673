"""The site never goes down, on a real systemd: a URL that crashes its worker, a broken deploy, and
thousands of idle connections, each with a probe counting what a new visitor sees."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boxutil import Probe, http_get, install_units, instance_states, parse_wrk

from sockact.box import PrivateSystemd

CRASH_HITS = 100
CRASH_SECONDS = 30.0


def start_app(box: PrivateSystemd, name: str, port: int, workers: int, *options: str) -> None:
    install_units(box, name, "--listen", str(port), "--workers", str(workers), *options)
    box.systemctl("start", f"{name}.socket")
    http_get(box, f"http://127.0.0.1:{port}/")
    box.wait_for(lambda: instance_states(box, name, workers) == ["active"] * workers, what=f"{name} workers active")


HITTER = """
import socket, sys, time
port, hits, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
began = time.monotonic()
for n in range(hits):
    time.sleep(max(0.0, began + n * seconds / hits - time.monotonic()))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /crash HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            conn.recv(100)
    except OSError:
        pass
print("done", flush=True)
"""


@pytest.mark.parametrize("app", ["crashy:app", "crashy:application"], ids=["asgi", "wsgi"])
def test_a_url_that_crashes_its_worker_100_times_in_30_s_never_closes_the_port(
    private_systemd: PrivateSystemd, shared_apps: Path, app: str
) -> None:
    box = private_systemd
    name, port = ("crashurl", 8400) if app.endswith(":app") else ("crashurlw", 8401)
    start_app(box, name, port, 2, "--app", app, "--chdir", str(shared_apps))
    probe = Probe(box, port, CRASH_SECONDS + 2)
    load = box.popen(
        "wrk", "-t1", "-c4", f"-d{int(CRASH_SECONDS)}s", f"http://127.0.0.1:{port}/", stdout=subprocess.PIPE, text=True
    )
    hitter = box.popen(
        sys.executable, "-c", HITTER, str(port), str(CRASH_HITS), str(CRASH_SECONDS), stdout=subprocess.PIPE, text=True
    )
    socket_states = set()
    while hitter.poll() is None:
        socket_states.add(box.show(f"{name}.socket", "ActiveState")["ActiveState"])
        time.sleep(0.5)
    seen = probe.result()
    stats = parse_wrk(load.communicate(timeout=60)[0])
    restarts = sum(int(box.show(f"{name}@{i}.service", "NRestarts")["NRestarts"]) for i in (1, 2))
    journal = box.journal("-u", f"{name}@*", "-o", "cat")
    replaced = len(re.findall(r"serving process \d+ died \(exit 1\)", journal))
    box.wait_for(lambda: instance_states(box, name, 2) == ["active"] * 2, what="both workers active")
    print(
        f"\n{app}: /crash hit {CRASH_HITS} times in {CRASH_SECONDS:.0f} s: {replaced} serving processes "
        f"forked again, {restarts} unit restarts; {seen}; socket states seen {sorted(socket_states)}; "
        f"wrk on /: {stats}"
    )
    assert replaced + restarts >= CRASH_HITS * 0.9  # every hit really killed a serving process
    box.wait_for(lambda: _status_restarts(box, name) >= replaced + restarts, what="status counting the crashes")
    assert seen.share >= 0.99, seen.failures()
    assert socket_states == {"active"}
    assert box.show(f"{name}.socket", "ActiveState", "Result") == {"ActiveState": "active", "Result": "success"}


def _status_restarts(box: PrivateSystemd, name: str) -> int:
    """RESTARTS of every worker in `sockact status --json`: unit restarts plus serving processes forked again."""
    out = box.run(sys.executable, "-m", "sockact", "status", name, "--json", check=False).stdout
    return sum(worker["restarts"] for worker in json.loads(out)["workers"])


def attempts(box: PrivateSystemd, unit: str) -> list[tuple[float, str]]:
    """(time, message) of every "retrying in" line of one worker, from the journal."""
    out = box.journal("-u", unit, "-o", "json", "--output-fields=MESSAGE,__REALTIME_TIMESTAMP")
    found = []
    for line in out.splitlines():
        record = json.loads(line)
        message = record.get("MESSAGE", "")
        if isinstance(message, str) and "retrying in" in message:
            found.append((int(record["__REALTIME_TIMESTAMP"]) / 1e6, message))
    return found


def test_a_broken_deploy_keeps_the_port_open_spaces_its_attempts_and_recovers_once_fixed(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    app_dir = shared_apps / "brokendeploy"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "deploy.py").write_text((shared_apps / "broken.py").read_text())
    install_units(box, "broke", "--app", "deploy:app", "--listen", "8410", "--workers", "2", "--chdir", str(app_dir))
    box.systemctl("start", "broke.socket")
    waiting = box.popen("curl", "-s", "--max-time", "60", "http://127.0.0.1:8410/", stdout=subprocess.PIPE, text=True)
    began = time.monotonic()
    box.wait_for(lambda: len(attempts(box, "broke@1.service")) >= 4, timeout=30, what="four attempts of broke@1")
    took = time.monotonic() - began
    lines = attempts(box, "broke@1.service")
    gaps = [round(later[0] - earlier[0], 1) for earlier, later in zip(lines, lines[1:])]
    starts = int(box.show("broke@1.service", "NRestarts")["NRestarts"]) + 1
    print(f"\nbroken deploy: {len(lines)} attempts of broke@1 in {took:.1f} s, gaps {gaps} s; {starts} starts")
    assert "cannot import deploy: ModuleNotFoundError: No module named 'this_module_does_not_exist'" in lines[0][1]
    assert "retrying in 1 s (attempt 1)" in lines[0][1] and "retrying in 4 s (attempt 3)" in lines[2][1]
    assert gaps == sorted(gaps) and gaps[-1] >= 3.5  # 1, 2, 4 s apart (plus the start itself)
    assert starts <= 6  # not ~8 a second
    # One line per attempt; the whole traceback only at debug priority (journalctl -p debug shows it).
    assert "Traceback" not in box.journal("-u", "broke@1.service", "-p", "info", "-o", "cat")
    assert "Traceback (most recent call last):" in box.journal("-u", "broke@1.service", "-p", "7..7", "-o", "cat")
    assert box.show("broke.socket", "ActiveState")["ActiveState"] == "active"
    assert (
        box.run(
            "python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8410), timeout=2)", check=False
        ).returncode
        == 0
    )  # the port is open: clients wait in the backlog
    status = box.run(sys.executable, "-m", "sockact", "status", "broke", check=False)
    print(status.stdout)
    assert re.search(
        r"@1 retrying: the app failed to start: cannot import deploy: ModuleNotFoundError.*"
        r"retrying in \d+ s",
        status.stdout,
    )
    assert status.returncode == 3 and "Next: fix the app" in status.stdout

    (app_dir / "deploy.py").write_text("from sockact.examples.hello import app\n")
    fixed = time.monotonic()
    answer, _ = waiting.communicate(timeout=60)  # the request sent during the outage is served
    box.wait_for(lambda: instance_states(box, "broke", 2) == ["active"] * 2, timeout=40, what="workers active")
    print(
        f"fixed: both workers serving {time.monotonic() - fixed:.1f} s later, no operator action; "
        f"the waiting request got {answer.strip()!r}"
    )
    assert answer.startswith("worker ")
    assert box.show("broke@1.service", "StatusText")["StatusText"].startswith("serving")


FLOOD = """
import json, resource, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 1000, count + 1000))
request = b"GET / HTTP/1.1\\r\\nHost: flood\\r\\n\\r\\n"
conns, refused = [], 0
for _ in range(count):
    try:
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    except OSError:
        refused += 1

def round_trip():
    # A request on every connection, then every answer: they stay busy keep-alive connections.
    answered = 0
    for conn in conns:
        try:
            conn.sendall(request)
        except OSError:
            pass
    for i, conn in enumerate(conns):
        try:
            reply = conn.recv(4096)
        except OSError:
            reply = b""
        answered += reply.startswith(b"HTTP/1.1 200")
        if not reply or b"connection: close" in reply.lower():
            # Handed over to the less busy worker (or closed): a client connects again, as browsers do.
            conn.close()
            try:
                conns[i] = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                pass
    return answered

rounds, began = [], time.monotonic()
print("flooding", flush=True)
while time.monotonic() - began < seconds:
    rounds.append(round_trip())
    time.sleep(2)  # idle between requests, within the 5 s keep-alive timeout
print(json.dumps({"opened": len(conns), "refused": refused, "answered_per_round": rounds}), flush=True)
"""


@pytest.mark.parametrize("app", ["crashy:app", "crashy:application"], ids=["asgi", "wsgi"])
def test_5000_keep_alive_connections_crash_no_worker_and_new_visitors_are_served(
    private_systemd: PrivateSystemd, shared_apps: Path, app: str
) -> None:
    box = private_systemd
    name, port = ("flood", 8420) if app.endswith(":app") else ("floodw", 8421)
    start_app(box, name, port, 2, "--app", app, "--chdir", str(shared_apps))
    pids = [box.show(f"{name}@{i}.service", "MainPID")["MainPID"] for i in (1, 2)]
    flood = box.popen(sys.executable, "-c", FLOOD, str(port), "5000", "12", stdout=subprocess.PIPE, text=True)
    assert flood.stdout is not None
    assert flood.stdout.readline().strip() == "flooding"  # 5,000 connections open, each served once
    probe = Probe(box, port, 10)
    seen = probe.result()
    figures = json.loads(flood.communicate(timeout=120)[0].splitlines()[-1])
    after = [box.show(f"{name}@{i}.service", "MainPID", "NRestarts") for i in (1, 2)]
    print(
        f"\n{app}: {figures['opened']} keep-alive connections (answers per round {figures['answered_per_round']}); "
        f"{seen}; workers {after}"
    )
    assert figures["opened"] == 5000 and min(figures["answered_per_round"]) >= 4950
    assert [worker["MainPID"] for worker in after] == pids and all(w["NRestarts"] == "0" for w in after)
    assert "died" not in box.journal("-u", f"{name}@*", "-o", "cat")  # no serving process forked again either
    assert seen.share >= 0.99, seen.failures()


def test_a_worker_at_its_descriptor_limit_stops_accepting_instead_of_failing(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    """With the old default limit (1024) forced back by a drop-in: the worker holds what it can, the
    rest wait in the listen backlog, and nothing fails or exits."""
    box = private_systemd
    dropin = box.unit_dir() / "lowfd@.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "nofile.conf").write_text("[Service]\nLimitNOFILE=1024\n")
    start_app(box, "lowfd", 8430, 1, "--app", "crashy:app", "--chdir", str(shared_apps))
    pid = box.show("lowfd@1.service", "MainPID")["MainPID"]
    flood = box.popen(sys.executable, "-c", FLOOD, "8430", "2000", "1", stdout=subprocess.PIPE, text=True)
    assert flood.stdout is not None
    assert flood.stdout.readline().strip() == "flooding"
    figures = json.loads(flood.communicate(timeout=120)[0].splitlines()[-1])
    after = Probe(box, 8430, 3).result()  # the flood is over: served again at once
    journal = box.journal("-u", "lowfd@1.service", "-o", "cat")
    print(
        f"\n2,000 connections to one worker limited to 1,024 descriptors: answers per round "
        f"{figures['answered_per_round']}; after the flood {after}"
    )
    assert box.show("lowfd@1.service", "MainPID", "NRestarts") == {"MainPID": pid, "NRestarts": "0"}
    assert "near the file descriptor limit" in journal and "Too many open files" not in journal
    assert "died" not in journal
    # Every one answered in the end: those past the ceiling waited in the backlog until idle ones closed.
    assert figures["answered_per_round"][0] == 2000 and "accepting again" in journal
    assert after.share == 1.0, after.failures()
