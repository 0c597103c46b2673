"""Faults under load on a real systemd: a full /dev/shm, and a stopped journald.

Each test boots its own private systemd, runs 2 workers under wrk, and probes with a new connection
every 0.1 s, counting what a new visitor sees while the fault lasts.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boxutil import failures, http_get, install_units, instance_states, parse_wrk

from sockact.box import PrivateSystemd

HELLO = "sockact.examples.hello:app"
DROPPED = "log records dropped (journal not keeping up)"
NO_SCOREBOARD = "serving without the /dev/shm scoreboard"

# A new connection every 0.1 s, each in its own thread so a stalled one never delays the next; runs
# until a line arrives on stdin, then prints how many were answered, the longest time without an
# answer, and the slowest answer.
PROBE = r"""
import json, socket, sys, threading, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results, lock, stop = [], threading.Lock(), threading.Event()
def one(sent):
    answered = None
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.settimeout(5)
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            answered = time.monotonic()
    except OSError:
        pass
    with lock:
        results.append((sent, answered))
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("probing", flush=True)
began, sent, threads = time.monotonic(), 0, []
while not stop.is_set():
    thread = threading.Thread(target=one, args=(time.monotonic(),))
    thread.start()
    threads.append(thread)
    sent += 1
    stop.wait(max(0.0, began + sent * 0.1 - time.monotonic()))
for thread in threads:
    thread.join()
answers = sorted(a for _, a in results if a is not None)
gaps = [later - earlier for earlier, later in zip(answers, answers[1:])]
slowest = max((a - s for s, a in results if a is not None), default=None)
print(json.dumps({"total": len(results), "answered": len(answers), "longest_gap": max(gaps, default=None),
                  "slowest": slowest}), flush=True)
"""


class Probe:
    def __init__(self, box: PrivateSystemd, port: int, path: str = "/") -> None:
        self.proc = box.popen(
            sys.executable,
            "-c",
            PROBE,
            "127.0.0.1",
            str(port),
            path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "probing"

    def finish(self) -> dict[str, float]:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        result: dict[str, float] = json.loads(out.splitlines()[-1])
        return result


def start_app(box: PrivateSystemd, name: str, port: int, workers: int, *options: str) -> None:
    install_units(box, name, "--listen", str(port), "--workers", str(workers), *options)
    box.systemctl("start", f"{name}.socket")
    http_get(box, f"http://127.0.0.1:{port}/")
    box.wait_for(lambda: instance_states(box, name, workers) == ["active"] * workers, what=f"{name} workers active")


def wrk(box: PrivateSystemd, url: str, seconds: int, *args: str) -> subprocess.Popen[str]:
    return box.popen("wrk", "-t2", "-c8", f"-d{seconds}s", *args, url, stdout=subprocess.PIPE, text=True)


def show(box: PrivateSystemd, unit: str) -> dict[str, str]:
    return box.show(unit, "ActiveState", "MainPID", "NRestarts", "Result", "ExecMainStatus", "ExecMainCode")


def logged_after_thaw(box: PrivateSystemd, line: str) -> bool:
    texts = box.journal("-u", "jfreeze@*", "-o", "cat").splitlines()
    return any(line in text and "after-thaw" in text for text in texts)


def shm_files(box: PrivateSystemd) -> list[str]:
    return box.run("ls", "-A", "/dev/shm").stdout.split()


def test_a_full_dev_shm_costs_a_restarted_worker_its_balance_not_its_life(fresh_systemd: PrivateSystemd) -> None:
    box = fresh_systemd
    # A small /dev/shm of the box's own, mounted before the workers start so their sandboxes see it.
    box.run("mount", "-t", "tmpfs", "-o", "size=256k,mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")
    start_app(box, "shm", 8400, 2, "--app", HELLO)
    box.wait_for(lambda: len([f for f in shm_files(box) if f.startswith("sockact.shm@")]) == 2, what="two slots")
    # Fill it, then leave a slot as a worker that died of a full /dev/shm leaves it: sized, never allocated.
    box.run(
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=64k 2>/dev/null || true; truncate -s 24 /dev/shm/sockact.shm@3.999999",
    )
    assert box.run("df", "--output=avail", "/dev/shm").stdout.split()[-1] == "0"
    before = {unit: show(box, unit) for unit in ("shm@1.service", "shm@2.service")}
    load = wrk(box, "http://127.0.0.1:8400/sleep?ms=5", 8, "-H", "Connection: close")
    probe = Probe(box, 8400)
    time.sleep(2.5)  # two of the workers' scoreboard refreshes (one a second): each met the sparse slot
    assert {unit: show(box, unit) for unit in before} == before, "a worker died reading a sparse slot"
    box.run("kill", "-9", before["shm@2.service"]["MainPID"])
    box.wait_for(lambda: show(box, "shm@2.service")["NRestarts"] != "0", what="shm@2 restarted")
    box.wait_active("shm@2.service")
    time.sleep(2.5)  # past two of the sibling's refreshes with the new worker up
    stats = parse_wrk(load.communicate(timeout=60)[0])
    seen = probe.finish()
    after = {unit: show(box, unit) for unit in ("shm@1.service", "shm@2.service")}
    print(
        f"\nfull /dev/shm, kill -9 of shm@2 under wrk: {stats}; probes answered {seen['answered']}/{seen['total']} "
        f"({100 * seen['answered'] / seen['total']:.1f} %), longest gap {seen['longest_gap']:.2f} s; "
        f"after: {after}"
    )
    assert after["shm@1.service"] == before["shm@1.service"]  # the sibling never died: same PID, no restart
    assert after["shm@2.service"]["ActiveState"] == "active" and after["shm@2.service"]["NRestarts"] == "1"
    assert "status=7/BUS" not in box.journal("-u", "shm@*")  # systemd's line for a worker killed by SIGBUS
    assert "died" not in box.journal("-u", "shm@*", "-o", "cat")  # nor a serving process forked again
    assert seen["answered"] >= 0.99 * seen["total"]
    assert failures(stats) <= 8, stats  # at most the connections the killed worker held
    box.wait_for(lambda: NO_SCOREBOARD in box.journal("-u", "shm@2.service", "-o", "cat"), what="the warning")
    assert box.journal("-u", "shm@*", "-o", "cat").count(NO_SCOREBOARD) == 1  # said once, by the restarted worker


@pytest.mark.parametrize("app", ["chatty:app", "chatty:application"], ids=["asgi", "wsgi"])
def test_a_stopped_journald_does_not_stall_serving(fresh_systemd: PrivateSystemd, shared_apps: Path, app: str) -> None:
    box = fresh_systemd
    start_app(box, "jfreeze", 8410, 2, "--app", app, "--chdir", str(shared_apps), "--access-log")
    box.write_unit("jfreeze@.service.d/50-no-rate-limit.conf", "[Service]\nLogRateLimitIntervalSec=0\n")
    box.daemon_reload()
    box.systemctl("restart", "jfreeze.target")
    box.wait_for(lambda: instance_states(box, "jfreeze", 2) == ["active"] * 2, what="workers back")
    journald = box.show("systemd-journald.service", "MainPID")["MainPID"]
    # /log logs a warning, prints a line and writes one to stderr (wsgi.errors), and the access log
    # a line, on every request.
    load = wrk(box, "http://127.0.0.1:8410/log", 14, "-H", "Connection: close")
    time.sleep(1.5)
    probe = Probe(box, 8410)
    box.run("kill", "-STOP", journald)
    frozen = 8.0
    time.sleep(frozen)  # the fault: journald reads nothing for this long
    box.run("kill", "-CONT", journald)
    stats = parse_wrk(load.communicate(timeout=60)[0])
    seen = probe.finish()
    print(
        f"\njournald stopped {frozen:g} s under wrk on /log ({app}): {stats}; probes answered {seen['answered']}/"
        f"{seen['total']} ({100 * seen['answered'] / seen['total']:.1f} %), longest gap {seen['longest_gap']:.2f} s, "
        f"slowest answer {seen['slowest']:.2f} s"
    )
    assert seen["total"] >= 80
    assert seen["answered"] >= 0.99 * seen["total"]
    assert seen["longest_gap"] < 1.0
    assert failures(stats) == 0, stats
    # Once journald reads again, the workers say how much they dropped, and log as before.
    box.wait_for(lambda: DROPPED in box.journal("-u", "jfreeze@*", "-o", "cat"), timeout=60, what="the drop count")
    http_get(box, "http://127.0.0.1:8410/log/after-thaw")
    for line in ("a warning from worker", "printed by worker", "an error line from worker", '"GET /log/after-thaw'):
        box.wait_for(functools.partial(logged_after_thaw, box, line), timeout=30, what=f"{line!r} after the freeze")
    counts = [line for line in box.journal("-u", "jfreeze@*", "-o", "cat").splitlines() if DROPPED in line]
    print(f"drop lines: {counts}")
    assert {"jfreeze@1.service", "jfreeze@2.service"} == {
        unit for unit in ("jfreeze@1.service", "jfreeze@2.service") if box.show(unit, "NRestarts")["NRestarts"] == "0"
    }
    assert "died" not in box.journal("-u", "jfreeze@*", "-o", "cat")  # no serving process forked again either
