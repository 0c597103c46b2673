"""The worker runtime without systemd: socket adoption, notify protocol, drain, light imports."""

from __future__ import annotations

import http.client
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

import pytest
from helpers import APPS, free_listener


def spawn_with_fd(
    sock: socket.socket, argv: list[str], env: dict[str, str] | None = None, listen_pid: str = "$$"
) -> subprocess.Popen[str]:
    """Start argv with `sock` as fd 3 and LISTEN_* set the way systemd sets them."""
    full_env = {**os.environ, "PYTHONPATH": str(APPS), **(env or {})}
    full_env.pop("NOTIFY_SOCKET", None) if "NOTIFY_SOCKET" not in (env or {}) else None
    script = f'exec 3>&{sock.fileno()}; LISTEN_FDS=1 LISTEN_PID={listen_pid} LISTEN_FDNAMES=t.socket exec "$@"'
    return subprocess.Popen(
        ["bash", "-c", script, "bash", *argv],
        pass_fds=(sock.fileno(),),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def get(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 10) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(20)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    messages: list[str] = []
    while not any(wanted in m for m in messages):
        messages.append(sock.recv(4096).decode())
    return messages


def test_adopts_the_real_family_and_unsets_listen_variables() -> None:
    sock = free_listener(socket.AF_INET6)
    probe = textwrap.dedent("""
        import os, socket, sockact
        [s] = sockact.listeners()
        print(s.family == socket.AF_INET6, s.type == socket.SOCK_STREAM, s.getsockname()[1])
        print(sorted(k for k in os.environ if k.startswith("LISTEN_")))
        print(s.get_inheritable())
    """)
    proc = spawn_with_fd(sock, [sys.executable, "-c", probe])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"True True {sock.getsockname()[1]}", "[]", "False"]


def test_refuses_fds_meant_for_another_pid() -> None:
    sock = free_listener()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "slowstart:app"], listen_pid="1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "LISTEN_FDS was passed to PID 1" in err
    assert "Traceback" not in err


def test_no_socket_and_no_bind_is_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        [sys.executable, "-m", "sockact", "run", "x:app"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    assert "no sockets" in result.stderr and "--bind" in result.stderr
    assert "Traceback" not in result.stderr


def test_listen_fds_without_the_fd_is_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    script = 'exec 3>&-; LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"'
    result = subprocess.run(
        ["bash", "-c", script, "bash", sys.executable, "-m", "sockact", "run", "x:app"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    assert "fd 3 is not open" in result.stderr and "socket unit" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_error_of_the_app_is_one_line() -> None:
    sock = free_listener()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "broken:app"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "cannot import broken: ModuleNotFoundError: No module named 'this_module_does_not_exist'" in err
    assert "Traceback" not in err


def test_ready_only_after_lifespan_startup(notify_socket: socket.socket) -> None:
    sock = free_listener()
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "STARTUP_SECONDS": "1.0"}
    started = time.time()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "slowstart:app"], env=env)
    try:
        messages = receive_until(notify_socket, "READY=1")
        ready_at = time.time()
        assert ready_at - started >= 1.0
        assert "STATUS=serving: 0 requests" in messages[-1]
        assert get(sock.getsockname()[1]) == (200, "ok")
        proc.send_signal(signal.SIGTERM)
        messages = receive_until(notify_socket, "STOPPING=1")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert float(out.split("startup complete at ")[1].split()[0]) <= ready_at
        assert "shutdown complete" in out
    finally:
        proc.kill()


def test_watchdog_pings_come_from_the_loop(notify_socket: socket.socket) -> None:
    sock = free_listener()
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "800000", "STARTUP_SECONDS": "0"}
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "slowstart:app"], env=env)
    try:
        receive_until(notify_socket, "READY=1")
        start = time.monotonic()
        pings = 0
        while pings < 3:
            if "WATCHDOG=1" in notify_socket.recv(4096).decode():
                pings += 1
        # every WatchdogSec/4 = 0.2 s, checked on the loop's 0.1 s tick
        assert time.monotonic() - start < 2.0
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_drains_a_slow_request_then_exits_zero() -> None:
    sock = free_listener()
    port = sock.getsockname()[1]
    proc = spawn_with_fd(
        sock, [sys.executable, "-m", "sockact", "run", "sockact.examples.hello:app", "--stop-timeout", "5"]
    )
    try:
        assert get(port)[0] == 200
        result: list[tuple[int, str]] = []
        slow = threading.Thread(target=lambda: result.append(get(port, "/sleep?ms=1500")))
        slow.start()
        time.sleep(0.3)  # let the slow request reach the app before the signal
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        slow.join(10)
        proc.wait(10)
        assert result and result[0][0] == 200
        assert proc.returncode == 0
        assert time.monotonic() - began < 5
    finally:
        proc.kill()


def test_runtime_imports_neither_jinja2_nor_the_cli() -> None:
    code = textwrap.dedent("""
        import sys
        import sockact, sockact.runtime.main, sockact.runtime.server, sockact.runtime.listen, sockact.runtime.notify
        sockact.runtime.main.parse(["x:app"])
        heavy = ("jinja2", "sockact.cli", "sockact.generator.render", "sockact.generator.spec", "sockact.ops")
        bad = [m for m in heavy if m in sys.modules]
        print(bad)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout.strip() == "[]", result.stderr


def test_startup_exception_exits_3_with_one_line() -> None:
    sock = free_listener()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "failstart:app"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "application startup failed: RuntimeError: database unreachable (at " in err
    assert "Traceback" not in err


def test_wsgi_app_is_detected_and_served() -> None:
    sock = free_listener()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "sockact.examples.hello_wsgi:application"])
    try:
        status, body = get(sock.getsockname()[1], "/sleep?ms=5")
        assert status == 200 and body.startswith("worker - pid ")
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_interface_detection() -> None:
    from sockact.examples import hello, hello_wsgi
    from sockact.runtime.interface import detect

    class Asgi2:
        def __init__(self, scope: object) -> None: ...

    assert detect(hello.app) == "asgi3"
    assert detect(hello_wsgi.application) == "wsgi"
    assert detect(Asgi2) == "asgi2"


@pytest.mark.parametrize("app", ["sockact.examples.hello:app", "sockact.examples.hello_wsgi:application"])
def test_access_log_only_with_the_flag(app: str) -> None:
    logged: dict[bool, str] = {}
    for flag in (False, True):
        sock = free_listener()
        proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", app, *(["--access-log"] if flag else [])])
        assert get(sock.getsockname()[1], "/probe-path")[0] == 200
        proc.terminate()
        logged[flag] = proc.communicate(timeout=30)[1]
    assert "/probe-path" in logged[True]
    assert "/probe-path" not in logged[False]


@pytest.mark.parametrize(
    ("app", "words"),
    [("broken:app", "cannot import broken, in full:"), ("failstart:app", "application startup failed, in full:")],
)
def test_the_whole_traceback_of_a_failed_start_only_at_debug(app: str, words: str) -> None:
    sock = free_listener()
    proc = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", app, "--log-level", "debug"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(words))
    assert " DEBUG sockact.runtime: " in lines[at] and lines[at + 1] == "Traceback (most recent call last):"
    assert any(app.split(":")[0] + ".py" in line for line in lines[at:])
