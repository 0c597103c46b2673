"""--health-listen and --drain-delay without systemd: /ready, /live and the drain delay on real sockets and
processes; the generator's options, their rendering and their refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boxutil import CONCURRENT, Probe, ProbeResult, http_get, install_units, instance_states, serving_pid
from helpers import APPS, free_listener, sockact

from sockact.box import PrivateSystemd

APP = ["--app", "myproj.asgi:application"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(port: int, request: bytes, timeout: float = 2.0) -> bytes | None:
    """The whole answer to one raw request on a new connection; None when the connection is refused or reset."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request)
            chunks = []
            while chunk := conn.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError:
        return None


def status(port: int, path: str, method: str = "GET") -> int | None:
    answer = ask(port, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return int(answer.split(b" ", 2)[1]) if answer else None


def wait_status(port: int, path: str, wanted: int, timeout: float = 20.0, every: float = 0.02) -> float:
    """The monotonic time /path first answered `wanted`, polling every `every` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(port, path) == wanted:
            return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"{path} did not answer {wanted} within {timeout} s (last: {status(port, path)})")


class Worker:
    """`sockact run APP --bind ... --health-listen ...` on free ports, stdout and stderr kept."""

    def __init__(self, app: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port, self.health = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "sockact",
            "run",
            app,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--health-listen",
            f"127.0.0.1:{self.health}",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": str(APPS), **(env or {})}
        full_env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=10)[0]

    def wait_health_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while status(self.health, "/live") is None:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the health endpoint never answered"
            time.sleep(0.01)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.communicate(timeout=10)


def test_ready_answers_503_until_lifespan_startup_completed(workers: list[Worker]) -> None:
    worker = Worker("slowstart:app", env={"STARTUP_SECONDS": "1.5"})
    workers.append(worker)
    worker.wait_health_up()
    began = time.time()
    seen: list[tuple[float, int | None, int | None]] = []
    while not seen or seen[-1][1] != 200:
        seen.append((time.time(), status(worker.health, "/ready"), status(worker.health, "/live")))
        assert time.time() - began < 20, seen[-3:]
        time.sleep(0.05)
    first_ready = seen[-1][0]
    worker.proc.send_signal(signal.SIGTERM)
    out = worker.output()
    startup_done = float(out.split("startup complete at ")[1].split()[0])
    not_ready = [when for when, ready, _ in seen if ready == 503]
    print(
        f"\n/ready: {len(not_ready)} answers 503 over {not_ready[-1] - not_ready[0]:.2f} s of lifespan startup, "
        f"then 200 {first_ready - startup_done:.3f} s after the startup completed; /live: "
        f"{sum(live == 200 for _, _, live in seen)} of {len(seen)} answers 200 meanwhile"
    )
    assert len(not_ready) >= 10  # 1.5 s of startup, polled every 0.05 s or so
    assert not_ready[-1] <= startup_done + 0.05  # never 503 once startup completed (beyond the poll's own skew)
    assert first_ready >= startup_done
    assert all(live == 200 for _, _, live in seen)  # starting is no reason to be restarted


def test_live_answers_503_while_a_handler_blocks_the_event_loop(workers: list[Worker]) -> None:
    worker = Worker("blocker:app", "--request-timeout", "1")
    workers.append(worker)
    worker.wait_health_up()
    wait_status(worker.health, "/ready", 200)
    assert status(worker.health, "/live") == 200
    blocked_at = time.monotonic()
    blocker = threading.Thread(target=ask, args=(worker.port, b"GET /block?s=4 HTTP/1.1\r\nHost: t\r\n\r\n", 10))
    blocker.start()
    down = wait_status(worker.health, "/live", 503, timeout=5)
    assert status(worker.health, "/ready") == 503  # a blocked worker is not ready either
    up = wait_status(worker.health, "/live", 200, timeout=8)
    blocker.join()
    print(
        f"\nloop blocked for 4 s (limit 1 s): /live 503 after {down - blocked_at:.2f} s, 200 again after "
        f"{up - blocked_at:.2f} s"
    )
    assert 0.9 <= down - blocked_at <= 2.0
    assert 3.8 <= up - blocked_at <= 5.5
    assert status(worker.health, "/ready") == 200


def test_live_answers_503_once_every_wsgi_thread_is_stuck(workers: list[Worker]) -> None:
    worker = Worker("wsgi_hang:app", "--threads", "2", "--request-timeout", "1", "--stop-timeout", "2")
    workers.append(worker)
    worker.wait_health_up()
    wait_status(worker.health, "/ready", 200)
    hangs = [socket.create_connection(("127.0.0.1", worker.port)) for _ in range(2)]
    try:
        hangs[0].sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.5)  # one thread past the request timeout: the other one still serves, so still live
        assert status(worker.health, "/live") == 200
        stuck_at = time.monotonic()
        hangs[1].sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        down = wait_status(worker.health, "/live", 503, timeout=5)
        print(
            f"\nboth WSGI threads stuck: /live 503 {down - stuck_at:.2f} s after the second one hung "
            "(request timeout 1 s)"
        )
        assert down - stuck_at <= 2.0
        assert status(worker.health, "/ready") == 503
    finally:
        for conn in hangs:
            conn.close()


def test_drain_delay_turns_ready_503_and_keeps_accepting_for_the_delay(workers: list[Worker]) -> None:
    delay = 2.0
    worker = Worker("sockact.examples.hello:app", "--drain-delay", str(delay), "--stop-timeout", "6")
    workers.append(worker)
    worker.wait_health_up()
    wait_status(worker.health, "/ready", 200)
    probes: list[tuple[float, bool]] = []
    stop = threading.Event()

    def probe() -> None:  # a new visitor every 0.1 s
        while not stop.is_set():
            began = time.monotonic()
            answer = ask(worker.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=2)
            probes.append((began, bool(answer and answer.startswith(b"HTTP/1.1 200"))))
            stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.5)
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    not_ready = wait_status(worker.health, "/ready", 503, timeout=2, every=0.01)
    code = worker.proc.wait(timeout=15)
    exited = time.monotonic()
    stop.set()
    prober.join()
    during = [ok for began, ok in probes if sent <= began <= sent + delay - 0.15]
    print(
        f"\nSIGTERM with --drain-delay {delay:g}: /ready 503 after {not_ready - sent:.3f} s; during the delay "
        f"{sum(during)} of {len(during)} new connections answered; exit status {code} "
        f"{exited - sent:.2f} s after SIGTERM"
    )
    assert not_ready - sent <= 0.2
    assert len(during) >= 12 and all(during)
    assert code == 0
    assert delay <= exited - sent <= delay + 3.0  # nothing in flight: the drain itself is short


def test_health_endpoint_answers_only_get_and_head_of_its_two_paths(workers: list[Worker]) -> None:
    worker = Worker("sockact.examples.hello:app")
    workers.append(worker)
    worker.wait_health_up()
    wait_status(worker.health, "/ready", 200)
    silent = socket.create_connection(("127.0.0.1", worker.health))  # sends nothing: must not hold the endpoint
    try:
        began = time.monotonic()
        live = ask(worker.health, b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert time.monotonic() - began < 0.5
    finally:
        silent.close()
    assert live == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\n\r\nlive\n"
    )
    head = ask(worker.health, b"HEAD /ready HTTP/1.1\r\nHost: t\r\n\r\n")
    assert head is not None and head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 6\r\n" in head
    assert status(worker.health, "/ready?full=1") == 200
    assert status(worker.health, "/") == 404
    assert status(worker.health, "/readyz") == 404
    assert status(worker.health, "/ready", "POST") == 405
    assert status(worker.health, "/live", "DELETE") == 405
    assert (ask(worker.health, b"nonsense\r\n\r\n") or b"").startswith(b"HTTP/1.1 400 ")
    huge = ask(worker.health, b"GET /live HTTP/1.1\r\n" + b"X: " + b"a" * 10000 + b"\r\n\r\n")
    assert huge is None or huge.startswith(b"HTTP/1.1 ")  # answered from the first 4 KiB, or reset
    assert status(worker.port, "/") == 200  # the app's own port is the app's


def test_drain_delay_not_below_stop_timeout_is_one_line_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sockact", "run", "x:app", "--drain-delay", "5", "--stop-timeout", "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "sockact run: --drain-delay 5 is not below --stop-timeout 5; the delay counts inside "
        "the stop timeout, lower it\n"
    )


@pytest.mark.parametrize("names", ["t.socket:health", "health:t.socket"])
def test_sockets_passed_by_systemd_are_told_apart_by_their_names(names: str) -> None:
    app_sock, health_sock = free_listener(), free_listener()
    app_port, health_port = app_sock.getsockname()[1], health_sock.getsockname()[1]
    first, second = (app_sock, health_sock) if names.startswith("t.") else (health_sock, app_sock)
    script = (
        f'exec 3>&{first.fileno()} 4>&{second.fileno()}; LISTEN_FDS=2 LISTEN_PID=$$ LISTEN_FDNAMES={names} exec "$@"'
    )
    env = {**os.environ, "PYTHONPATH": str(APPS)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        ["bash", "-c", script, "bash", sys.executable, "-m", "sockact", "run", "sockact.examples.hello:app"],
        pass_fds=(first.fileno(), second.fileno()),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_status(health_port, "/ready", 200)
        answer = ask(app_port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert answer is not None and answer.startswith(b"HTTP/1.1 200") and b"pid" in answer
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
        app_sock.close()
        health_sock.close()
    assert "serving 1 socket(s)" in out


# --- the generator -------------------------------------------------------------------------------


def test_generate_without_the_options_renders_no_health_socket() -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", check=True)
    assert "-health.socket" not in result.stdout and "FileDescriptorName=" not in result.stdout
    assert "--drain-delay" not in result.stdout and "--health-listen" not in result.stdout
    assert "Sockets=myapp.socket\n" in result.stdout


def test_generate_renders_the_health_socket_and_both_options(tmp_path: Path) -> None:
    result = sockact(
        "generate",
        "myapp",
        *APP,
        "--listen",
        "8000",
        "--health-listen",
        "127.0.0.1:9000",
        "--drain-delay",
        "5.50",
        "--stop-timeout",
        "20",
        "--output-dir",
        str(tmp_path),
        check=True,
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "myapp-health.socket",
        "myapp.socket",
        "myapp.target",
        "myapp@.service",
    ]
    health = (tmp_path / "myapp-health.socket").read_text()
    for line in (
        "ListenStream=127.0.0.1:9000\n",
        "FileDescriptorName=health\n",
        "Accept=no\n",
        "Service=myapp@1.service\n",
        "WantedBy=sockets.target\n",
    ):
        assert line in health
    service = (tmp_path / "myapp@.service").read_text()
    assert "Sockets=myapp.socket myapp-health.socket\n" in service
    assert " --health-listen 127.0.0.1:9000 --drain-delay 5.5\n" in service
    assert "TimeoutStopSec=20\n" in service
    assert "FileDescriptorName=" not in (tmp_path / "myapp.socket").read_text()
    only = sockact(
        "generate",
        "myapp",
        *APP,
        "--listen",
        "8000",
        "--health-listen",
        "[::1]:9000",
        "--only",
        "health-socket",
        check=True,
    )
    assert only.stdout.count("[Socket]") == 1 and "ListenStream=[::1]:9000\n" in only.stdout
    assert result.stdout.count("wrote ") == 4


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["--health-listen", "8000"],
            (
                "sockact: --health-listen '8000' collides with --listen 8000; give the health endpoint a port of its "
                "own, "
                "e.g. 127.0.0.1:9000\n"
            ),
        ),
        (
            ["--health-listen", "127.0.0.1:8000"],
            (
                "sockact: --health-listen '127.0.0.1:8000' collides with --listen 8000; give the health endpoint a "
                "port of "
                "its own, e.g. 127.0.0.1:9000\n"
            ),
        ),
        (
            ["--health-listen", "localhost:9000"],
            (
                "sockact: --health-listen 'localhost:9000': 'localhost' is not an IPv4 address; systemd listens on "
                "addresses, "
                "not host names (use e.g. 127.0.0.1:8000, [::1]:8000 or just the port)\n"
            ),
        ),
        (
            ["--health-listen", "127.0.0.1:99999"],
            "sockact: --health-listen '127.0.0.1:99999': port 99999 is out of range (1-65535)\n",
        ),
        (
            ["--health-listen", "health"],
            "sockact: --health-listen 'health' is not PORT, HOST:PORT, [V6ADDR]:PORT or an absolute unix socket path\n",
        ),
        (
            ["--drain-delay", "30"],
            (
                "sockact: --drain-delay 30 is not below --stop-timeout 30: the delay counts inside the stop timeout "
                "and the "
                "drain needs the rest; lower it or raise --stop-timeout\n"
            ),
        ),
        (
            ["--drain-delay", "12", "--stop-timeout", "10"],
            (
                "sockact: --drain-delay 12 is not below --stop-timeout 10: the delay counts inside the stop timeout "
                "and the "
                "drain needs the rest; lower it or raise --stop-timeout\n"
            ),
        ),
        (
            ["--drain-delay", "-1"],
            "sockact: --drain-delay '-1': give a number of seconds from 0 (off) to 86400, e.g. 30\n",
        ),
        (
            ["--drain-delay", "soon"],
            "sockact: --drain-delay 'soon': give a number of seconds from 0 (off) to 86400, e.g. 30\n",
        ),
    ],
)
def test_bad_health_and_drain_options_are_one_line_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", *args, "--output-dir", str(tmp_path))
    assert (result.returncode, result.stderr) == (2, expected)
    assert list(tmp_path.iterdir()) == []


def test_health_options_are_refused_with_exec() -> None:
    result = sockact("generate", "myapp", "--exec", "/usr/bin/true", "--listen", "8000", "--health-listen", "9000")
    assert (result.returncode, result.stderr) == (
        2,
        (
            "sockact: --health-listen applies to the built-in runtime "
            "(--app); a command given with --exec serves its own health "
            "checks\n"
        ),
    )
    result = sockact("generate", "myapp", "--exec", "/usr/bin/true", "--listen", "8000", "--drain-delay", "3")
    assert (result.returncode, result.stderr) == (
        2,
        (
            "sockact: --drain-delay applies to the built-in runtime "
            "(--app); a command given with --exec drains its own way\n"
        ),
    )


# --- under a real systemd ------------------------------------------------------------------------


def box_status(box: PrivateSystemd, url: str) -> str:
    return box.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url, check=False).stdout


def test_systemd_workers_share_the_health_socket_and_drain_after_the_delay(private_systemd: PrivateSystemd) -> None:
    box, name, port, health, delay = private_systemd, "hz", 8140, 9140, 2.0
    install_units(
        box,
        name,
        "--listen",
        str(port),
        "--workers",
        "2",
        "--app",
        "sockact.examples.hello:app",
        "--health-listen",
        f"127.0.0.1:{health}",
        "--drain-delay",
        f"{delay:g}",
        "--stop-timeout",
        "8",
    )
    box.systemctl("start", f"{name}.socket", f"{name}-health.socket")
    http_get(box, f"http://127.0.0.1:{port}/")
    box.wait_for(lambda: instance_states(box, name, 2) == ["active"] * 2, what="both workers active")
    serving = {serving_pid(box, f"{name}@{i}.service") for i in (1, 2)}
    holders = box.run("ss", "-ltnpH", f"sport = :{health}").stdout
    assert all(f"pid={pid}," in holders for pid in serving), holders  # one health socket, held by both workers
    answers = [box_status(box, f"http://127.0.0.1:{health}/ready") for _ in range(20)]
    assert answers == ["200"] * 20, answers
    assert box_status(box, f"http://127.0.0.1:{health}/live") == "200"

    # New visitors every 0.1 s from 1 s before the stop to the end of the delay: a load balancer that saw
    # /ready answer 503 sends nothing more by then (and a connection left queued once the workers exit
    # would start them again: the socket stays listening).
    lead = 1.0
    probe = Probe(box, port, seconds=lead + delay - 0.3)
    probe_began = time.monotonic()
    time.sleep(lead)
    stop = box.popen("systemctl", "stop", f"{name}.target", stderr=subprocess.PIPE, text=True)
    stopped_at = time.monotonic()
    while box_status(box, f"http://127.0.0.1:{health}/ready") != "503":
        assert time.monotonic() - stopped_at < 2, "/ready never answered 503"
    not_ready = time.monotonic() - stopped_at
    result = probe.result()
    stop_error = stop.communicate(timeout=30)[1]
    stop_took = time.monotonic() - stopped_at
    assert stop.returncode == 0, stop_error
    during = [ok for at, ok, *_ in result.results if float(at) >= stopped_at - probe_began]
    print(
        f"\nsystemctl stop {name}.target with --drain-delay {delay:g}, 2 workers: /ready 503 from the shared "
        f"health port {not_ready:.2f} s after the stop began; {sum(during)} of {len(during)} new connections "
        f"answered during the delay; the stop took {stop_took:.2f} s; whole probe: {result}"
    )
    assert not_ready <= 0.5  # includes starting systemctl and curl inside the box
    assert len(during) >= 12 and all(during), result.failures()
    assert delay <= stop_took <= delay + 4
    assert instance_states(box, name, 2) == ["inactive"] * 2


def test_install_and_uninstall_handle_the_health_socket(private_systemd: PrivateSystemd) -> None:
    box, name, unit_dir = private_systemd, "hinst", "/run/systemd/system"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return box.run(sys.executable, "-m", "sockact", *args, check=False, timeout=120)

    installed = cli(
        "install",
        name,
        "--app",
        "sockact.examples.hello:app",
        "--listen",
        "127.0.0.1:8150",
        "--health-listen",
        "127.0.0.1:9150",
        "--drain-delay",
        "1",
        "--workers",
        "2",
        "--python",
        sys.executable,
        "--unit-dir",
        unit_dir,
        "--enable",
        "--now",
    )
    assert installed.returncode == 0, installed.stderr
    files = [f"{name}.socket", f"{name}@.service", f"{name}.target", f"{name}-health.socket"]
    for file in files:
        assert f"wrote {unit_dir}/{file}\n" in installed.stdout
    assert f"enabled {name}.socket and {name}-health.socket: it starts on boot" in installed.stdout
    assert (box.unit_dir() / "sockets.target.wants" / f"{name}-health.socket").is_symlink()
    assert box_status(box, "http://127.0.0.1:9150/ready") == "200"

    stopped = cli("stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert box.show(f"{name}-health.socket", "ActiveState")["ActiveState"] == "inactive"
    assert box_status(box, "http://127.0.0.1:9150/ready") == "000"  # closed: a probe starts nothing
    assert instance_states(box, name, 2) == ["inactive"] * 2
    started = cli("start", name)
    assert started.returncode == 0, started.stderr
    assert box_status(box, "http://127.0.0.1:9150/ready") == "200"

    removed = cli("uninstall", name, "--unit-dir", unit_dir)
    assert removed.returncode == 0, removed.stderr
    for file in files:
        assert f"removed {unit_dir}/{file}\n" in removed.stdout
        assert not (box.unit_dir() / file).exists()
    assert not (box.unit_dir() / "sockets.target.wants" / f"{name}-health.socket").exists()
    assert box_status(box, "http://127.0.0.1:9150/ready") == "000"
    print(f"\ninstall/stop/start/uninstall with --health-listen: {len(files)} files written and removed")


# /ready on a new connection every `every` seconds from inside the box, until a line on stdin:
# [time.time(), status (0: refused or reset), body] for each.
READY_POLL = textwrap.dedent("""
    import json, select, socket, sys, time
    port, every = int(sys.argv[1]), float(sys.argv[2])
    seen = []
    print("polling", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        began = time.time()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"GET /ready HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
            head, _, body = data.partition(b"\\r\\n\\r\\n")
            seen.append([began, int(head.split(b" ")[1]), body.decode().strip()])
        except (OSError, IndexError, ValueError) as exc:
            seen.append([began, 0, repr(exc)])
        time.sleep(max(0.0, every - (time.time() - began)))
    print(json.dumps(seen), flush=True)
""")


class ReadyPoll:
    def __init__(self, box: PrivateSystemd, port: int, every: float) -> None:
        self.process = box.popen(
            sys.executable,
            "-c",
            READY_POLL,
            str(port),
            str(every),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "polling"

    def result(self) -> list[list[Any]]:
        out, _ = self.process.communicate("stop\n", timeout=30)
        seen: list[list[Any]] = json.loads(out.splitlines()[-1])
        return seen


def leaving_times(box: PrivateSystemd, name: str) -> list[float]:
    """When each worker logged that it is leaving (journald's receive time, seconds since the epoch)."""
    out = box.run("journalctl", "--no-pager", "-o", "json", "-u", f"{name}@*.service", timeout=30).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted(
        int(r["__REALTIME_TIMESTAMP"]) / 1e6
        for r in records
        if str(r.get("MESSAGE", "")).startswith("leaving: accepting for")
    )


def _two_workers_with_health(box: PrivateSystemd, name: str, port: int, health: int, delay: float) -> None:
    install_units(
        box,
        name,
        "--listen",
        str(port),
        "--workers",
        "2",
        "--app",
        "sockact.examples.hello:app",
        "--health-listen",
        f"127.0.0.1:{health}",
        "--drain-delay",
        f"{delay:g}",
        "--stop-timeout",
        "10",
    )
    box.systemctl("start", f"{name}.socket", f"{name}-health.socket", f"{name}.target")
    box.wait_for(lambda: instance_states(box, name, 2) == ["active"] * 2, what="both workers active")
    assert box_status(box, f"http://127.0.0.1:{health}/ready") == "200"


def test_ready_stays_200_during_a_rolling_reload_and_the_drain_delay_is_skipped(
    private_systemd: PrivateSystemd,
) -> None:
    box, name, port, health, delay = private_systemd, "hrl", 8160, 9160, 4.0
    _two_workers_with_health(box, name, port, health, delay)
    # Long requests in flight, so each leaving worker drains for a while and holds the health socket meanwhile.
    long = box.popen(
        sys.executable,
        "-c",
        CONCURRENT,
        "127.0.0.1",
        str(port),
        "/sleep?ms=1200",
        "4",
        "4",
        stdout=subprocess.PIPE,
        text=True,
    )
    poll = ReadyPoll(box, health, every=0.02)
    began = time.monotonic()
    box.run(sys.executable, "-m", "sockact", "reload", name, timeout=120)
    took = time.monotonic() - began
    seen = poll.result()
    answers = json.loads(long.communicate(timeout=30)[0])
    statuses = [status for _, status, _ in seen]
    for_host = [body for _, status, body in seen if status == 200 and str(body).startswith("ready: ")]
    why = {word: sum(f"is {word}," in str(body) for body in for_host) for word in ("leaving", "starting", "stuck")}
    print(
        f"\nsockact reload of 2 workers with --drain-delay {delay:g}: {statuses.count(200)} of {len(seen)} /ready "
        f"probes answered 200 on the shared health port over {took:.2f} s, {len(for_host)} of them by a worker not "
        f"ready itself answering for its sibling ({why}); the 1.2 s requests in flight: "
        f"{[status for status, _ in answers['answers']]}, errors {answers['errors']}"
    )
    assert len(seen) >= 40 and statuses == [200] * len(seen), [entry for entry in seen if entry[1] != 200]
    assert for_host, "no probe reached a leaving or starting worker: the reload was not exercised"
    assert answers["errors"] == [] and [status for status, _ in answers["answers"]] == [200] * 4
    # Each restart waited for its drain (a 1.2 s request at most) and the start, not for the delay.
    assert took < 2 * delay, f"the reload took {took:.2f} s: the drain delay was waited"
    assert instance_states(box, name, 2) == ["active"] * 2


def test_ready_turns_503_within_0_2_s_of_sockact_stop_and_both_workers_wait_the_delay(
    private_systemd: PrivateSystemd,
) -> None:
    box, name, port, health, delay = private_systemd, "hst", 8170, 9170, 2.0
    _two_workers_with_health(box, name, port, health, delay)
    poll = ReadyPoll(box, health, every=0.01)
    probe = Probe(box, port, seconds=delay + 1.0)
    probe_began = time.time()  # the probe's times count from about then
    began = time.monotonic()
    box.run(sys.executable, "-m", "sockact", "stop", name, timeout=120)
    took = time.monotonic() - began
    seen = poll.result()
    leaving = leaving_times(box, name)
    assert len(leaving) == 2, f"both workers leave with the delay (none skips it): {leaving}"
    # New visitors until the delay ends (a load balancer has stopped sending by then): all answered.
    served = ProbeResult(
        [entry for entry in probe.result().results if probe_began + float(entry[0]) <= leaving[0] + delay - 0.2]
    )
    first_503 = next(at for at, status, _ in seen if status == 503)
    after = [status for at, status, _ in seen if at >= first_503]
    last_200 = max((at for at, status, _ in seen if status == 200), default=0.0)
    print(
        f"\nsockact stop with --drain-delay {delay:g}, 2 workers: workers left {leaving[1] - leaving[0]:.3f} s apart; "
        f"/ready 503 {first_503 - leaving[0]:.3f} s after the first one left ({first_503 - leaving[1]:.3f} s after "
        f"the second), last 200 {last_200 - leaving[0]:.3f} s after the first; then {after.count(503)} answers 503 and "
        f"{after.count(0)} refused, none 200; the stop took {took:.2f} s; new visitors on the app port during the "
        f"delay: {served}"
    )
    assert first_503 - leaving[0] <= 0.2
    assert set(after) <= {503, 0} and after.count(503) >= 50, after  # 503 for the delay, then the port is closed
    assert served.total >= 10 and served.answered == served.total, served.failures()
    assert took >= delay
