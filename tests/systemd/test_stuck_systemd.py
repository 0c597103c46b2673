"""Hung handlers and blocked loops under a real systemd: detected, logged, replaced, while the siblings serve."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from boxutil import failures, instance_states, parse_wrk
from test_ops_commands import status_of
from test_worker_systemd import start_app

from sockact.box import PrivateSystemd

# New visitors: a new connection every 0.1 s, each on its own thread so a slow one delays no other;
# runs until a line arrives on stdin, then prints what they saw.
PROBE = """
import json, socket, sys, threading, time
port, timeout = int(sys.argv[1]), float(sys.argv[2])
results, lock, stop = [], threading.Lock(), threading.Event()
def probe():
    began = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"GET / HTTP/1.1\\r\\nHost: probe\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while True:
                piece = conn.recv(4096)
                if not piece:
                    break
                data += piece
        ok = data.startswith(b"HTTP/1.1 200")
        worker = data.split(b"\\r\\n\\r\\n", 1)[-1].split()[1].decode() if ok else None
    except OSError:
        ok, worker = False, None
    with lock:
        results.append((began, ok, time.monotonic() - began, worker))
def pace():
    threads = []
    while not stop.is_set():
        thread = threading.Thread(target=probe)
        thread.start()
        threads.append(thread)
        time.sleep(0.1)
    for thread in threads:
        thread.join()
pacer = threading.Thread(target=pace)
pacer.start()
print("probing", flush=True)
sys.stdin.readline()
stop.set()
pacer.join()
print(json.dumps(results), flush=True)
"""

# Hangs requests in worker W on keep-alive connections it opened beforehand. New connections would not
# do: the workers balance connections, so a worker holding hung ones stops accepting while a sibling
# has fewer, and a hang sent on a new connection lands on the sibling. So it opens connections at
# once (both workers take their share), learns each one's worker from a GET /, keeps every one of
# them alive with a GET / every 2 s (they would close after 5 s idle), and sends each hang on one
# of worker W's: the counts stay level, so nothing moves. Prints the time of each hang, and stops
# after each count given on the command line until a line arrives on stdin.
HANGER = """
import socket, sys, threading, time
port, worker, stops = int(sys.argv[1]), sys.argv[2], [int(n) for n in sys.argv[3:]]
lock = threading.Lock()

def ask(conn):
    conn.sendall(b"GET / HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
    data = b""
    while b"\\n" not in data.split(b"\\r\\n\\r\\n", 1)[-1] or b"\\r\\n\\r\\n" not in data:
        piece = conn.recv(4096)
        if not piece:
            raise OSError("closed")
        data += piece
    head, body = data.split(b"\\r\\n\\r\\n", 1)
    if b"connection: close" in head.lower():
        raise OSError("handed over")  # a worker evening out its connections with a less busy sibling
    return body.split()[1].decode()

mine, others = [], []

def prune():
    closed = 0
    for group in (mine, others):
        for conn in list(group):
            try:
                ask(conn)
            except OSError:
                group.remove(conn)
                closed += 1
    return closed

# Until a round of pings finds every connection kept: a worker that took more than its share hands
# the surplus over on its next ticks (Connection: close), whatever order the workers started in.
while True:
    while len(mine) < stops[-1] + 2:
        batch = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2 * stops[-1])]
        for conn in batch:
            try:
                (mine if ask(conn) == worker else others).append(conn)
            except OSError:  # closed (a worker moving a connection to a less busy sibling): not used
                conn.close()
    time.sleep(0.5)
    if prune() == 0 and len(mine) >= stops[-1] + 2:
        break

def keep():
    while True:
        time.sleep(2)
        with lock:
            for group in (mine, others):
                for conn in list(group):
                    try:
                        ask(conn)
                    except OSError:  # closed by the server: not used for a hang
                        group.remove(conn)

threading.Thread(target=keep, daemon=True).start()
held = []
while stops:
    with lock:
        conn = mine.pop() if mine else None
    for _ in range(50):  # all handed over to the sibling meanwhile: a new one that lands on this worker
        if conn is not None:
            break
        fresh = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            conn = fresh if ask(fresh) == worker else None
        except OSError:
            conn = None
    if conn is None:
        raise SystemExit("no connection to the worker to hang")
    sent = time.monotonic()
    conn.sendall(f"GET /hang?worker={worker} HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n".encode())
    conn.settimeout(1.0)
    try:
        answered = conn.recv(4096)
        if not answered:
            continue  # closed meanwhile: another one
    except TimeoutError:
        answered = b""
    except OSError:
        continue
    if answered:
        raise SystemExit(f"the hang was answered: {answered[:80]!r}")
    held.append(conn)
    print(f"hung {len(held)} {sent:.6f}", flush=True)
    if len(held) == stops[0]:
        stops.pop(0)
        sys.stdin.readline()
time.sleep(600)
"""

# Opens N keep-alive connections, one request on each, and keeps them open and idle.
HOLDER = """
import http.client, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    conn.getresponse().read()
    held.append(conn)
print("holding", flush=True)
time.sleep(600)
"""


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, f"the script ended before printing {prefix!r}"
        if line.startswith(prefix):
            return line


def hung_until(hanger: subprocess.Popen[str], count: int) -> float:
    """The CLOCK_MONOTONIC time (shared with the box) at which hang number `count` was sent (the
    script ends, failing the read, should a hang be answered)."""
    while True:
        _, number, sent = read_line(hanger, "hung ").split()
        if int(number) == count:
            return float(sent)


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def stop_probe(probe: subprocess.Popen[str]) -> list[tuple[float, bool, float, str | None]]:
    go(probe)
    results: list[Any] = json.loads(read_line(probe, "["))
    probe.wait(timeout=30)
    return [tuple(item) for item in results]


def restarts(box: PrivateSystemd, unit: str) -> int:
    return int(box.show(unit, "NRestarts")["NRestarts"])


def test_a_wsgi_worker_with_every_thread_hung_is_replaced_and_its_sibling_serves(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    timeout, watchdog, threads = 3, 2, 10
    start_app(
        box,
        "hangw",
        8450,
        2,
        "--app",
        "wsgi_hang:app",
        "--chdir",
        str(shared_apps),
        "--request-timeout",
        str(timeout),
        "--watchdog",
        str(watchdog),
    )
    sibling_pid = box.show("hangw@2.service", "MainPID")["MainPID"]
    probe = box.popen(
        sys.executable, "-c", PROBE, "8450", "3", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    read_line(probe, "probing")
    hanger = box.popen(
        sys.executable,
        "-c",
        HANGER,
        "8450",
        "1",
        str(threads - 1),
        str(threads),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = hung_until(hanger, 1)
        hung_until(hanger, threads - 1)
        # One thread left: the worker serves with it and keeps pinging, long past timeout + watchdog.
        partly = f"; {threads - 1} of {threads} threads stuck for"
        box.wait_for(
            lambda: partly in box.show("hangw@1.service", "StatusText")["StatusText"],
            timeout=timeout + 5,
            what=f"STATUS= saying {partly!r}",
        )
        box.wait_for(lambda: time.monotonic() - first > timeout + watchdog + 1, timeout=60, what="time passing")
        assert restarts(box, "hangw@1.service") == 0

        # More keep-alive connections than a worker's threads: the sibling holds far more connections
        # than the hung worker, and must not stop accepting in its favour.
        load = box.popen("wrk", "-t2", "-c40", "-d10s", "http://127.0.0.1:8450/", stdout=subprocess.PIPE, text=True)
        time.sleep(1)  # wrk's connections open before the last thread hangs
        go(hanger)
        whole = hung_until(hanger, threads)
        # Visitors that stay: idle keep-alive connections pile up on the sibling, far above the hung
        # worker's count; were the sibling to stop accepting in its favour, nobody would accept.
        holder = box.popen(sys.executable, "-c", HOLDER, "8450", "24", stdout=subprocess.PIPE, text=True)
        box.wait_for(
            lambda: restarts(box, "hangw@1.service") == 1, timeout=timeout + watchdog + 20, what="hangw@1 restarted"
        )
        box.wait_for(lambda: instance_states(box, "hangw", 2) == ["active"] * 2, what="hangw@1 back")
        replaced = time.monotonic() - whole
        stats = parse_wrk(load.communicate(timeout=60)[0])
        time.sleep(1)  # new visitors after the replacement, too
    finally:
        hanger.kill()
        results = stop_probe(probe)
    holder.kill()
    answered = sum(ok for _, ok, _, _ in results)
    slowest = max(took for _, ok, took, _ in results if ok)
    by_worker = {worker: sum(1 for *_, w in results if w == worker) for worker in ("1", "2")}
    journal = box.journal("-u", "hangw@1.service", "-o", "cat")
    logged = re.findall(r"request GET /hang has run for [0-9.]+ s", journal)
    print(
        f"\n{threads} threads of hangw@1 hung (--request-timeout {timeout}, WatchdogSec={watchdog}): replaced "
        f"{replaced:.1f} s after the last hang; probes {answered}/{len(results)} answered (slowest {slowest:.2f} s, "
        f"by worker {by_worker}); wrk {stats}; {len(logged)} stuck requests logged"
    )
    assert replaced <= timeout + watchdog + 3
    assert answered >= 0.99 * len(results) and len(results) >= 100
    assert box.show("hangw@2.service", "MainPID")["MainPID"] == sibling_pid
    assert restarts(box, "hangw@2.service") == 0
    assert "died" not in box.journal("-u", "hangw@2.service", "-o", "cat")  # its serving process never replaced
    assert len(logged) == threads
    assert f"all {threads} threads are stuck" in journal and "Watchdog timeout" in journal
    assert stats["requests"] > 100 and failures(stats) <= 40  # only wrk connections held by the hung worker


def test_an_asgi_loop_blocked_by_a_sync_call_is_restarted_by_the_default_watchdog(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    start_app(box, "hanga", 8452, 2, "--app", "blocker:app", "--chdir", str(shared_apps))  # generate's defaults
    watchdog = int(box.show("hanga@1.service", "WatchdogUSec")["WatchdogUSec"].rstrip("s") or 0)
    assert watchdog == 10
    probe = box.popen(
        sys.executable, "-c", PROBE, "8452", "3", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    read_line(probe, "probing")
    try:
        pids = {i: box.show(f"hanga@{i}.service", "MainPID")["MainPID"] for i in (1, 2)}
        blocked_at = time.monotonic()
        blocker = box.popen("curl", "-s", "--max-time", "70", "http://127.0.0.1:8452/block?s=60")

        def blocked_worker() -> dict[str, Any] | None:
            workers = status_of(box, "hanga")["workers"]
            return next((worker for worker in workers if worker["state"] == "not serving"), None)

        box.wait_for(
            lambda: blocked_worker() is not None,
            timeout=watchdog - 1,
            interval=0.2,
            what="sockact status showing the blocked worker as not serving",
        )
        seen = blocked_worker()
        assert seen is not None and seen["not_serving"].startswith("event loop blocked for ")
        unit = seen["unit"]
        other = "hanga@2.service" if unit == "hanga@1.service" else "hanga@1.service"
        text = box.run(sys.executable, "-m", "sockact", "status", "hanga", check=False).stdout
        box.wait_for(lambda: restarts(box, unit) == 1, timeout=watchdog + 20, what=f"{unit} restarted")
        box.wait_active(unit)
        replaced = time.monotonic() - blocked_at
        blocker.kill()
        time.sleep(1)  # new visitors after the replacement, too
    finally:
        results = stop_probe(probe)
    answered = sum(ok for _, ok, _, _ in results)
    journal = box.journal("-u", unit, "-o", "cat")
    named = [line for line in journal.splitlines() if "the event loop has been blocked" in line]
    print(
        f"\nASGI loop blocked by GET /block?s=60 in {unit} (default WatchdogSec={watchdog}): "
        f"replaced {replaced:.1f} s "
        f"after the request; probes {answered}/{len(results)} answered; journal: {named[:1]}"
    )
    assert replaced <= watchdog + 4
    assert len(named) == 1 and "by GET /block, at " in named[0] and "blocker.py" in named[0]
    assert "Watchdog timeout" in journal
    assert "not serving (event loop blocked for" in text
    assert restarts(box, other) == 0 and box.show(other, "MainPID")["MainPID"] == pids[int(other[6])]
    assert "died" not in box.journal("-u", other, "-o", "cat")
    assert answered >= 0.99 * len(results)


def test_status_shows_a_worker_with_every_thread_stuck_as_not_serving(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    start_app(
        box,
        "hangs",
        8454,
        1,
        "--app",
        "wsgi_hang:app",
        "--chdir",
        str(shared_apps),
        "--request-timeout",
        "2",
        "--watchdog",
        "0",
    )  # no watchdog: it stays stuck, for status to show
    assert box.show("hangs@1.service", "WatchdogUSec")["WatchdogUSec"] in ("0", "infinity")
    hanger = box.popen(
        sys.executable, "-c", HANGER, "8454", "1", "1", "10", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        hung_until(hanger, 1)

        def worker() -> dict[str, Any]:
            found: dict[str, Any] = status_of(box, "hangs")["workers"][0]
            return found

        box.wait_for(lambda: worker()["threads_stuck"] == 1, interval=0.2, what="one thread stuck")
        assert worker()["state"] == "running"
        go(hanger)
        hung_until(hanger, 10)
        box.wait_for(lambda: worker()["state"] == "not serving", interval=0.2, what="hangs@1 not serving")
        seen = worker()
        text = box.run(sys.executable, "-m", "sockact", "status", "hangs", check=False).stdout
    finally:
        hanger.kill()
    print(f"\nsockact status, 10 of 10 threads stuck:\n{text}")
    assert re.fullmatch(r"10 of 10 threads stuck for \d+ s", seen["not_serving"])
    assert text.startswith("hangs: 0 of 1 workers running, 1 not serving")
    assert "not serving (10 of 10 threads stuck for" in text
