"""Memory limits and recycling without systemd: size validation, rendering, the per-worker draw, the
runtime leaving with status 4, and what this machine's cgroups enforce."""

from __future__ import annotations

import http.client
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import APPS, sockact

from sockact.generator.cgroups import memory_control
from sockact.runtime.recycle import MIB, RECYCLE_EXIT, Limits, Recycler, draw_limit

APP = ["--app", "myproj.asgi:application", "--listen", "8000"]


@pytest.mark.parametrize("value", ["512M", "2G", "1T", "65536K", "536870912", "25%", "100%", "infinity"])
def test_good_sizes_render_as_written(value: str) -> None:
    text = sockact(
        "generate",
        "myapp",
        *APP,
        "--memory-max",
        value,
        "--memory-high",
        value if "%" in value else "32M",
        "--only",
        "service",
        check=True,
    ).stdout
    assert f"MemoryMax={value}\n" in text
    lines = text.splitlines()
    # Beside the stop timeout, in [Service].
    assert lines.index(f"MemoryMax={value}") - lines.index("TimeoutStopSec=30") <= 4


BAD = [
    (["--memory-max", "512m"], "--memory-max '512m': give a size"),
    (["--memory-max", "512MB"], "give a size"),
    (["--memory-max=-1G"], "give a size"),
    (["--memory-max", "0"], "below 32M"),
    (["--memory-max", "1000"], "below 32M"),
    (["--memory-max", "0%"], "from 1% to 100%"),
    (["--memory-max", "101%"], "from 1% to 100%"),
    (["--memory-max", "99999999999999999T"], "give a size"),
    (["--memory-high", "1G\nUser=root"], "control character"),
    (["--memory-high", "1G", "--memory-max", "512M"], "is not below --memory-max"),
    (["--max-rss", "512", "--memory-max", "512M"], "kill the worker before it recycles"),
    (["--max-requests", "-5"], "--max-requests '-5'"),
    (["--max-requests", "1e3"], "whole number"),
    (["--max-rss", "lots"], "--max-rss 'lots'"),
    (["--max-requests-jitter", "50"], "give --max-requests N too"),
]


@pytest.mark.parametrize("extra,expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_limits_are_one_line_exit_2_nothing_written(tmp_path: Path, extra: list[str], expected: str) -> None:
    result = sockact("generate", "myapp", *APP, *extra, "--output-dir", str(tmp_path))
    assert result.returncode == 2, result
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_recycling_options_only_with_the_builtin_runtime(tmp_path: Path) -> None:
    result = sockact(
        "generate",
        "myapp",
        "--exec",
        "/usr/bin/myserver",
        "--listen",
        "8000",
        "--max-requests",
        "100",
        "--output-dir",
        str(tmp_path),
    )
    assert result.returncode == 2 and "built-in runtime" in result.stderr and list(tmp_path.iterdir()) == []
    text = sockact(
        "generate",
        "myapp",
        "--exec",
        "/usr/bin/myserver",
        "--listen",
        "8000",
        "--memory-max",
        "1G",
        "--only",
        "service",
        check=True,
    ).stdout
    assert "MemoryMax=1G\n" in text


def test_recycling_options_reach_execstart_and_are_off_by_default() -> None:
    plain = sockact("generate", "myapp", *APP, "--only", "service", check=True).stdout
    assert "--max-" not in plain and "Memory" not in plain.replace("MemoryDenyWriteExecute", "")
    text = sockact(
        "generate",
        "myapp",
        *APP,
        "--max-requests",
        "1000",
        "--max-requests-jitter",
        "50",
        "--max-rss",
        "300",
        "--only",
        "service",
        check=True,
    ).stdout
    assert (
        "--stop-timeout 30 --request-timeout 30 --respawn --max-requests 1000 --max-requests-jitter 50 --max-rss 300\n"
    ) in text
    explained = sockact(
        "generate",
        "myapp",
        *APP,
        "--max-requests",
        "1000",
        "--max-requests-jitter",
        "50",
        "--memory-max",
        "1G",
        "--explain",
        check=True,
    ).stdout
    assert "MemoryMax=1G\n" in explained and "after 1000 to 1050 requests" in explained


def test_systemd_analyze_verify_accepts_the_memory_lines(tmp_path: Path) -> None:
    for value in ("512M", "25%"):
        sockact(
            "generate",
            "verify",
            "--app",
            "sockact.examples.hello:app",
            "--listen",
            "8000",
            "--memory-max",
            value,
            "--memory-high",
            "30%" if "%" in value else "400M",
            "--python",
            sys.executable,
            "--output-dir",
            str(tmp_path),
            check=True,
        )
        result = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / "verify@.service")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        about_ours = [line for line in result.stderr.splitlines() if "verify@" in line]
        assert about_ours == [], result.stderr


def test_each_worker_draws_its_limit_in_range() -> None:
    rng = random.Random(7)
    draws = [draw_limit(200, 50, rng) for _ in range(2000)]
    assert min(draws) == 200 and max(draws) == 250  # both ends reachable, nothing outside
    assert len(set(draws)) == 51
    assert draw_limit(0, 50, rng) == 0 and draw_limit(200, 0, rng) == 200


def test_the_request_limit_fires_once() -> None:
    recycler = Recycler(Limits(max_requests=3))
    assert [recycler.served(n) for n in range(1, 7)] == [False, False, True, False, False, False]
    assert recycler.reason is not None and "after 3 requests" in recycler.reason
    assert recycler.exit_status() == RECYCLE_EXIT
    assert Recycler(Limits(max_rss_mib=1 << 20)).exit_status() == 0


def test_the_rss_limit_reads_this_process() -> None:
    recycler = Recycler(Limits(max_rss_mib=0))
    assert recycler.rss is None
    now = Recycler(Limits(max_rss_mib=1 << 20)).rss
    assert now is not None
    base = now.bytes() // MIB
    recycler = Recycler(Limits(max_rss_mib=base + 64))
    recycler.started()
    assert not recycler.due(0)
    block = bytearray(b"\x01") * (128 * MIB)  # written, so resident
    assert recycler.due(5) and "over --max-rss" in (recycler.reason or "")
    assert not recycler.due(6)  # decided once
    del block


def test_a_limit_below_the_rss_at_startup_is_dropped_not_looped() -> None:
    recycler = Recycler(Limits(max_rss_mib=1))
    recycler.started()
    assert recycler.rss is None and not recycler.due(0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("app,engine", [("grow:app", "asgi"), ("grow:application", "wsgi")], ids=["asgi", "wsgi"])
def test_the_runtime_serves_its_limit_then_exits_4(app: str, engine: str) -> None:
    port = _free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockact",
            "run",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--max-requests",
            "5",
            "--max-requests-jitter",
            "3",
        ],
        cwd=APPS,
        stderr=subprocess.PIPE,
        text=True,
    )
    served, deadline = 0, time.monotonic() + 20
    while worker.poll() is None and time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
            served += 1
        except OSError:
            time.sleep(0.05)  # not listening yet, or gone
    assert worker.wait(10) == RECYCLE_EXIT
    log = worker.stderr.read() if worker.stderr else ""
    line = next(line for line in log.splitlines() if "recycling after" in line)
    limit = int(line.rsplit("limit ", 1)[1].rstrip(")"))
    print(f"\n{app} ({engine}): limit {limit}, served {served}, exit {worker.returncode}: {line.split(': ', 1)[1]}")
    assert 5 <= limit <= 8 and limit <= served <= limit


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_what_the_cgroup_hierarchy_enforces(tmp_path: Path) -> None:
    assert memory_control(_tree(tmp_path / "v2", {"cgroup.controllers": "cpu io memory pids\n"})).memory_max
    unified_without = memory_control(_tree(tmp_path / "v2bare", {"cgroup.controllers": "cpu pids\n"}))
    assert not unified_without.memory_max and "no memory controller" in unified_without.why
    legacy = memory_control(_tree(tmp_path / "v1", {"memory/memory.limit_in_bytes": "0\n"}))
    assert legacy.memory_max and not legacy.memory_high
    assert not memory_control(tmp_path / "none").memory_max
