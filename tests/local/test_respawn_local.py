"""`sockact run --respawn` without systemd: a crashed serving process is forked again at once, the
parent serves nothing itself, SIGTERM drains and ends both, and a boot failure ends the parent."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sys
import time
from pathlib import Path

from helpers import APPS, free_listener
from test_runtime_local import get, spawn_with_fd


def serving_pid(port: int) -> int:
    return int(get(port)[1].split()[3])  # "worker - pid 1234"


def crash(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/crash")
    # the serving process dies under the request, as it should
    with contextlib.suppress(ConnectionError, http.client.RemoteDisconnected):
        conn.getresponse()


def test_a_crashed_serving_process_is_forked_again_within_milliseconds() -> None:
    sock = free_listener()
    port = sock.getsockname()[1]
    runtime = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "crashy:app", "--respawn"])
    try:
        first = serving_pid(port)
        assert first != runtime.pid  # served by a forked process, not by the parent
        gaps = []
        for _ in range(5):
            before = serving_pid(port)
            began = time.monotonic()
            crash(port)
            after = serving_pid(port)
            gaps.append(time.monotonic() - began)
            assert after != before
        print(f"\ncrash to the next answer, 5 times: {', '.join(f'{gap * 1000:.0f} ms' for gap in gaps)}")
        assert max(gaps) < 1.0
        assert runtime.poll() is None
        runtime.send_signal(signal.SIGTERM)
        assert runtime.wait(15) == 0
    finally:
        runtime.kill()
        sock.close()
    stderr = runtime.stderr.read() if runtime.stderr else ""
    assert stderr.count("died (exit 1)") == 5 and "Traceback" not in stderr


def test_sigterm_before_the_app_is_loaded_is_a_clean_stop(tmp_path: Path) -> None:
    (tmp_path / "slowimport.py").write_text("import time\ntime.sleep(30)\napp = None\n")
    sock = free_listener()
    runtime = spawn_with_fd(
        sock,
        [sys.executable, "-m", "sockact", "run", "slowimport:app", "--respawn"],
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{APPS}"},
    )
    try:
        time.sleep(1.0)  # the serving process is importing the app
        runtime.send_signal(signal.SIGTERM)
        assert runtime.wait(10) == -signal.SIGTERM  # died of SIGTERM, as a clean stop looks to systemd
    finally:
        runtime.kill()
        sock.close()


def test_an_app_that_cannot_start_ends_the_parent_with_exit_3() -> None:
    sock = free_listener()
    runtime = spawn_with_fd(sock, [sys.executable, "-m", "sockact", "run", "broken:app", "--respawn"])
    try:
        assert runtime.wait(20) == 3
    finally:
        runtime.kill()
        sock.close()
    stderr = runtime.stderr.read() if runtime.stderr else ""
    assert "cannot import broken" in stderr and "died" not in stderr
    import psutil

    left = [p.pid for p in psutil.process_iter(["cmdline"]) if "broken:app" in " ".join(p.info["cmdline"] or [])]
    assert left == []  # no serving process outlived its parent
