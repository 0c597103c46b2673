"""The worker runtime under a real systemd: fairness, zero lost requests, drain, watchdog, status, logs, start."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boxutil import concurrent_get, failures, http_get, install_units, instance_states, parse_wrk, served_counts

from sockact.box import PrivateSystemd

HELLO = "sockact.examples.hello:app"
HELLO_WSGI = "sockact.examples.hello_wsgi:application"


def start_app(box: PrivateSystemd, name: str, port: int, workers: int, *options: str) -> None:
    install_units(box, name, "--listen", str(port), "--workers", str(workers), *options)
    box.systemctl("start", f"{name}.socket")
    http_get(box, f"http://127.0.0.1:{port}/")
    box.wait_for(lambda: instance_states(box, name, workers) == ["active"] * workers, what=f"{name} workers active")


def wrk(box: PrivateSystemd, url: str, seconds: int, *args: str) -> subprocess.Popen[str]:
    return box.popen("wrk", "-t2", "-c8", f"-d{seconds}s", *args, url, stdout=subprocess.PIPE, text=True)


def case(prefix: str, base_port: int, keepalive: bool, app: str) -> tuple[str, int, list[str], str]:
    """A unit name and port of its own per parameter combination, wrk's header, and a label to print."""
    wsgi = app == HELLO_WSGI
    name, port = f"{prefix}{int(keepalive)}{'w' if wsgi else ''}", base_port + int(keepalive) + 2 * wsgi
    label = f"{'WSGI' if wsgi else 'ASGI'}, {'keep-alive' if keepalive else 'Connection: close'}"
    return name, port, [] if keepalive else ["-H", "Connection: close"], label


@pytest.mark.parametrize("app", [HELLO, HELLO_WSGI], ids=["asgi", "wsgi"])
@pytest.mark.parametrize("keepalive", [False, True], ids=["close", "keepalive"])
def test_each_worker_gets_a_fair_share(private_systemd: PrivateSystemd, keepalive: bool, app: str) -> None:
    box = private_systemd
    name, port, header, label = case("fair", 8100, keepalive, app)
    start_app(box, name, port, 2, "--app", app)
    time.sleep(1.1)  # STATUS= is refreshed every second
    before = served_counts(box, name, 2)
    out, _ = wrk(box, f"http://127.0.0.1:{port}/sleep?ms=10", 4, *header).communicate(timeout=60)
    assert failures(parse_wrk(out)) == 0, out
    time.sleep(1.1)
    shares = [after - prior for after, prior in zip(served_counts(box, name, 2), before)]
    ratio = max(shares) / max(1, min(shares))
    print(f"\nfairness ({label}): per worker {shares}, max/min {ratio:.2f}")
    assert ratio <= 1.2, shares


@pytest.mark.parametrize("app", [HELLO, HELLO_WSGI], ids=["asgi", "wsgi"])
@pytest.mark.parametrize("keepalive", [False, True], ids=["close", "keepalive"])
def test_full_restart_under_load_loses_no_request(private_systemd: PrivateSystemd, keepalive: bool, app: str) -> None:
    box = private_systemd
    name, port, header, label = case("restart", 8110, keepalive, app)
    start_app(box, name, port, 2, "--app", app)
    load = wrk(box, f"http://127.0.0.1:{port}/sleep?ms=5", 6, *header)
    time.sleep(1.5)
    for _ in range(2):
        box.systemctl("restart", f"{name}.target")
        box.wait_for(lambda: instance_states(box, name, 2) == ["active"] * 2, what="workers back")
        time.sleep(0.7)
    stats = parse_wrk(load.communicate(timeout=60)[0])
    print(f"\nsystemctl restart {name}.target x2 under wrk ({label}): {stats}")
    assert stats["requests"] > 100
    assert failures(stats) == 0, stats


def test_kill_9_restarts_that_worker_and_the_others_keep_serving(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    start_app(box, "k9", 8120, 2, "--app", HELLO)
    pid = box.show("k9@2.service", "MainPID")["MainPID"]
    load = wrk(box, "http://127.0.0.1:8120/sleep?ms=20", 4, "-H", "Connection: close")
    time.sleep(1)
    box.run("kill", "-9", pid)
    box.wait_for(lambda: box.show("k9@2.service", "NRestarts")["NRestarts"] == "1", what="k9@2 restarted")
    box.wait_for(lambda: instance_states(box, "k9", 2) == ["active"] * 2, what="k9@2 active again")
    stats = parse_wrk(load.communicate(timeout=60)[0])
    print(f"\nkill -9 of one of 2 workers under wrk: {stats}")
    # Only connections the killed worker held can fail: at most its share of wrk's 8.
    assert failures(stats) <= 8, stats
    result = concurrent_get(box, 8120, "/sleep?ms=10", total=60, parallel=6)
    assert result["errors"] == [] and {w for _, w in result["answers"]} == {"1", "2"}


DRAIN_CLIENT = """
import http.client, json, socket, sys, threading, time
port = int(sys.argv[1])
idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
idle.request("GET", "/")
idle.getresponse().read()          # now an idle keep-alive connection
result = {}
def slow():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/sleep?ms=2500")
    response = conn.getresponse()
    result["slow"] = [response.status, response.read().decode().strip(), time.monotonic()]
thread = threading.Thread(target=slow)
thread.start()
time.sleep(0.5)
print("in flight", flush=True)
sys.stdin.readline()               # the test sends SIGTERM (systemctl stop) now
began = time.monotonic()
idle.sock.settimeout(10)
result["idle_closed_after"] = time.monotonic() - began if idle.sock.recv(1) == b"" else None
thread.join()
result["slow"][2] -= began
print(json.dumps(result), flush=True)
"""


@pytest.mark.parametrize("app", [HELLO, HELLO_WSGI], ids=["asgi", "wsgi"])
def test_sigterm_finishes_the_slow_request_and_closes_idle_connections(
    private_systemd: PrivateSystemd, app: str
) -> None:
    box = private_systemd
    name, port = ("drain", 8130) if app == HELLO else ("drainw", 8131)
    start_app(box, name, port, 1, "--app", app, "--stop-timeout", "10")
    client = box.popen(
        sys.executable, "-c", DRAIN_CLIENT, str(port), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline().strip() == "in flight"
    began = time.monotonic()
    stopper = box.popen("systemctl", "stop", f"{name}@1.service")
    client.stdin.write("go\n")
    client.stdin.flush()
    result = json.loads(client.stdout.readline())
    assert stopper.wait(20) == 0
    stopped_after = time.monotonic() - began
    print(
        f"\ndrain {name}: slow request {result['slow'][:2]} finished {result['slow'][2]:.2f} s after SIGTERM; "
        f"idle keep-alive closed after {result['idle_closed_after']:.2f} s; "
        f"worker stopped after {stopped_after:.2f} s"
    )
    assert result["slow"][0] == 200
    assert result["idle_closed_after"] is not None and result["idle_closed_after"] < 2
    assert stopped_after < 10
    assert box.show(f"{name}@1.service", "Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}


@pytest.mark.parametrize("app", [HELLO, HELLO_WSGI], ids=["asgi", "wsgi"])
def test_drain_never_runs_past_the_stop_timeout(private_systemd: PrivateSystemd, app: str) -> None:
    box = private_systemd
    name, port = ("deadline", 8140) if app == HELLO else ("deadlinew", 8141)
    start_app(box, name, port, 1, "--app", app, "--stop-timeout", "3")
    slow = box.popen(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"http://127.0.0.1:{port}/sleep?ms=20000",
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    began = time.monotonic()
    box.systemctl("stop", f"{name}@1.service")
    took = time.monotonic() - began
    slow.kill()
    journal = box.journal("-u", f"{name}@1.service", "-o", "cat")
    print(f"\ndrain deadline 3 s with a 20 s request in flight ({name}): stopped after {took:.2f} s")
    assert took < 3.0
    assert "Killing" not in journal and "timed out" not in journal  # it left on its own, before SIGKILL


def test_watchdog_kills_a_blocked_loop_but_not_a_late_one(private_systemd: PrivateSystemd, shared_apps: Path) -> None:
    box = private_systemd
    start_app(box, "wd", 8150, 1, "--app", "blocker:app", "--chdir", str(shared_apps), "--watchdog", "2")
    http_get(box, "http://127.0.0.1:8150/block?s=1")  # late by 1 s of a 2 s watchdog: alive
    time.sleep(1)
    assert box.show("wd@1.service", "NRestarts")["NRestarts"] == "0"
    box.run("curl", "-s", "--max-time", "10", "http://127.0.0.1:8150/block?s=8", check=False)
    box.wait_for(lambda: box.show("wd@1.service", "NRestarts")["NRestarts"] == "1", timeout=20, what="watchdog restart")
    assert "Watchdog timeout" in box.journal("-u", "wd@1.service", "-o", "cat")
    box.wait_active("wd@1.service")
    assert http_get(box, "http://127.0.0.1:8150/").startswith("worker 1")


def test_status_line_has_live_figures(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    start_app(box, "stat", 8160, 1, "--app", HELLO)
    for _ in range(5):
        http_get(box, "http://127.0.0.1:8160/")
    box.wait_for(lambda: served_counts(box, "stat", 1)[0] >= 6, what="STATUS= counting requests")
    text = box.show("stat@1.service", "StatusText")["StatusText"]
    assert "in flight" in text and "req/s" in text and "ready since" in text


def test_app_logs_reach_the_journal_with_priority_and_worker(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    start_app(box, "logs", 8170, 2, "--app", "blocker:app", "--chdir", str(shared_apps))
    http_get(box, "http://127.0.0.1:8170/log")

    def records() -> list[dict[str, str]]:
        out = box.journal("-u", "logs@*", "-o", "json")
        return [json.loads(line) for line in out.splitlines() if "from worker" in line]

    box.wait_for(lambda: len(records()) >= 2, what="app log records in the journal")
    by_priority = {r["PRIORITY"]: r for r in records()}
    assert "a warning from worker" in by_priority["4"]["MESSAGE"]
    assert "an error from worker" in by_priority["3"]["MESSAGE"]
    record = by_priority["3"]
    worker = record["MESSAGE"].split()[-1]
    assert record["_SYSTEMD_UNIT"] == f"logs@{worker}.service"
    if importlib.util.find_spec("systemd") is not None:  # sent by systemd-python's journal sender
        assert record["SOCKACT_WORKER"] == worker and record["SOCKACT_APP"] == "logs"
        assert record["SYSLOG_IDENTIFIER"] == f"logs@{worker}"


def test_start_says_why_a_broken_app_cannot_start_and_starts_it_once_fixed(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    app_dir = shared_apps / "crashloop"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "crashy.py").write_text((shared_apps / "broken.py").read_text())
    install_units(box, "crashy", "--app", "crashy:app", "--listen", "8180", "--workers", "2", "--chdir", str(app_dir))
    began = time.monotonic()
    start = box.run(sys.executable, "-m", "sockact", "start", "crashy", check=False)
    took = time.monotonic() - began
    print(f"\nsockact start of a broken app: exit {start.returncode} after {took:.1f} s")
    assert start.returncode == 1 and "did not start" in start.stderr  # says so at once, with the journal
    assert "cannot import crashy" in start.stderr and "retrying in" in start.stderr
    assert took < 15
    assert box.show("crashy.socket", "ActiveState")["ActiveState"] == "active"  # the port stays open

    (app_dir / "crashy.py").write_text("from sockact.examples.hello import app\n")
    began = time.monotonic()
    start = box.run(sys.executable, "-m", "sockact", "start", "crashy", check=False)
    assert start.returncode == 0, start.stderr
    assert "2 workers ready" in start.stdout
    assert time.monotonic() - began < 5  # workers waiting to retry tried again at once
    assert instance_states(box, "crashy", 2) == ["active"] * 2
    assert http_get(box, "http://127.0.0.1:8180/").startswith("worker ")

    stop = box.run(sys.executable, "-m", "sockact", "stop", "crashy", check=False)
    assert stop.returncode == 0, stop.stderr
    assert instance_states(box, "crashy", 2) == ["inactive"] * 2
    assert box.show("crashy.socket", "ActiveState")["ActiveState"] == "inactive"


def test_starting_a_worker_leaves_the_shared_socket_non_blocking(private_systemd: PrivateSystemd) -> None:
    """systemd sets O_NONBLOCK on the passed socket each time it starts a worker, and that flag is
    shared by every worker: without NonBlocking=yes, restarting one worker left the others' accept()
    blocking, and a worker hung there until the next connection."""
    box = private_systemd
    start_app(box, "nb", 8190, 2, "--app", HELLO)
    box.systemctl("restart", "nb@1.service")
    pid = box.show("nb@2.service", "MainPID")["MainPID"]
    flags = int(box.run("sh", "-c", f"grep ^flags: /proc/{pid}/fdinfo/3").stdout.split()[1], 8)
    assert flags & 0o4000, oct(flags)  # O_NONBLOCK
    result = concurrent_get(box, 8190, "/sleep?ms=5", total=40, parallel=8)
    assert result["errors"] == [] and {w for _, w in result["answers"]} == {"1", "2"}


def autogroup_nice(box: PrivateSystemd, instance: str) -> int | None:
    """The nice value of the worker's autogroup ("/autogroup-7 nice 5"), None without autogroups."""
    pid = box.show(instance, "MainPID")["MainPID"]
    done = box.run("cat", f"/proc/{pid}/autogroup", check=False)
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.strip() else None


def test_the_workers_together_weigh_one_autogroup_unless_told_otherwise(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    start_app(box, "weigh", 8250, 3, "--app", HELLO)
    start_app(box, "each", 8253, 2, "--app", HELLO, "--env", "SOCKACT_CPU_SHARE=worker")
    names = [f"weigh@{i}.service" for i in (1, 2, 3)]
    if not enabled.exists() or enabled.read_text().strip() != "1":
        # No autogroups on this kernel: nothing to weigh, and the workers serve as ever.
        assert all(autogroup_nice(box, name) in (None, 0) for name in names)
        return
    # Each of 3 sessions at nice 5 (weight 335) weighs together about one nice-0 group (1024).
    box.wait_for(
        lambda: [autogroup_nice(box, name) for name in names] == [5, 5, 5],
        timeout=10,
        what="the workers' autogroups at nice 5",
    )
    assert [autogroup_nice(box, f"each@{i}.service") for i in (1, 2)] == [0, 0]
