"""`sockact generate`: output forms, and bad input rejected in one line with exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import sockact

APP = ["--app", "myproj.asgi:application"]


def test_default_output_lists_every_unit_under_its_header() -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", "--workers", "3", check=True)
    headers = [line for line in result.stdout.splitlines() if line.startswith("# /etc/systemd/system/")]
    assert headers == [
        "# /etc/systemd/system/myapp.socket",
        "# /etc/systemd/system/myapp@.service",
        "# /etc/systemd/system/myapp.target",
    ]
    assert "ListenStream=8000\n" in result.stdout
    assert "NoDelay=yes\n" in result.stdout
    assert "Wants=myapp@1.service myapp@2.service myapp@3.service\n" in result.stdout
    assert f"ExecStart={sys.executable} -m sockact run myproj.asgi:application" in result.stdout


@pytest.mark.parametrize("kind,first_section", [("socket", "[Socket]"), ("service", "[Service]"), ("target", "[Unit]")])
def test_only_prints_one_unit_alone(kind: str, first_section: str) -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", kind, check=True)
    assert "# /etc/systemd/system/" not in result.stdout
    assert first_section in result.stdout
    assert result.stdout.count("[Unit]") == 1


def test_workers_auto_is_the_cpus_this_process_may_use() -> None:
    import os

    result = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "target", check=True)
    count = len(os.sched_getaffinity(0))
    assert f"myapp@{count}.service" in result.stdout
    assert f"myapp@{count + 1}.service" not in result.stdout


def test_output_dir_writes_the_three_files(tmp_path: Path) -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", "--output-dir", str(tmp_path), check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myapp.socket", "myapp.target", "myapp@.service"]
    assert result.stdout.splitlines() == [f"wrote {tmp_path / name}" for name in ("myapp.socket", "myapp@.service", "myapp.target")]


@pytest.mark.parametrize(
    "listen,rendered",
    [
        (["8000"], ["ListenStream=8000"]),
        (["127.0.0.1:8080"], ["ListenStream=127.0.0.1:8080"]),
        (["[::1]:8080"], ["ListenStream=[::1]:8080"]),
        (["/run/myapp/http.sock"], ["ListenStream=/run/myapp/http.sock"]),
        (["8000", "[::1]:9000", "/run/a.sock"], ["ListenStream=8000", "ListenStream=[::1]:9000", "ListenStream=/run/a.sock"]),
    ],
)
def test_listen_forms(listen: list[str], rendered: list[str]) -> None:
    args = [arg for item in listen for arg in ("--listen", item)]
    text = sockact("generate", "myapp", *APP, *args, "--only", "socket", check=True).stdout
    assert [line for line in text.splitlines() if line.startswith("ListenStream=")] == rendered
    assert ("NoDelay=yes" in text) == any(not item.startswith("/") for item in listen)


def test_exec_runs_any_command_and_escapes_it() -> None:
    text = sockact("generate", "myapp", "--exec", "/usr/bin/env FOO='a b' my$var 50%", "--listen", "8000",
                   "--only", "service", check=True).stdout
    assert 'ExecStart=/usr/bin/env "FOO=a b" my$$var 50%%\n' in text


def test_watchdog_and_stop_timeout() -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--watchdog", "10", "--stop-timeout", "12",
                   "--only", "service", check=True).stdout
    assert "WatchdogSec=10\n" in text
    assert "TimeoutStopSec=12\n" in text
    assert "--stop-timeout 12 --request-timeout 30 --respawn\n" in text


def test_the_builtin_runtime_gets_a_watchdog_and_a_request_timeout_by_default() -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "service", check=True).stdout
    assert "WatchdogSec=10\n" in text
    assert "--request-timeout 30" in text
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--watchdog", "0", "--request-timeout", "4.5",
                   "--only", "service", check=True).stdout
    assert "WatchdogSec=" not in text
    assert "--request-timeout 4.5" in text
    off = sockact("generate", "myapp", *APP, "--listen", "8000", "--request-timeout", "0", "--only", "service",
                  check=True).stdout
    assert "--request-timeout 0" in off and "WatchdogSec=10\n" in off


def test_a_command_of_its_own_gets_a_watchdog_only_when_asked() -> None:
    # A program given with --exec may never send WATCHDOG=1: a default would kill it every 10 s.
    exec_args = ("--exec", "/usr/bin/myserver", "--listen", "8000", "--only", "service")
    assert "WatchdogSec=" not in sockact("generate", "myapp", *exec_args, check=True).stdout
    assert "WatchdogSec=5\n" in sockact("generate", "myapp", *exec_args, "--watchdog", "5", check=True).stdout


BAD_INPUTS = [
    (["my app", *APP, "--listen", "8000"], "not a valid unit name"),
    (["my@app", *APP, "--listen", "8000"], "not a valid unit name"),
    (["myapp.service", *APP, "--listen", "8000"], "unit suffix"),
    (["myapp\n", *APP, "--listen", "8000"], "control character"),
    (["myapp", *APP, "--listen", "0"], "from 1 to 65535"),
    (["myapp", *APP, "--listen", "65536"], "from 1 to 65535"),
    (["myapp", *APP, "--listen", "localhost:80"], "not an IPv4 address"),
    (["myapp", *APP, "--listen", "[::1]80"], "[ADDRESS]:PORT"),
    (["myapp", *APP, "--listen", "relative.sock"], "not PORT"),
    (["myapp", *APP, "--listen", "8000", "--workers", "0"], "--workers"),
    (["myapp", *APP, "--listen", "8000", "--workers", "many"], "--workers"),
    (["myapp", "--app", "myproj.asgi", "--listen", "8000"], "MODULE:ATTRIBUTE"),
    (["myapp", "--app", "my-proj:app", "--listen", "8000"], "MODULE:ATTRIBUTE"),
    (["myapp", "--app", "m:app\nExecStartPre=/bin/sh", "--listen", "8000"], "control character"),
    (["myapp", *APP, "--listen", "8000", "--env", "NOEQUALS"], "no '='"),
    (["myapp", *APP, "--listen", "8000", "--env", "A=1\nUser=root"], "control character"),
    (["myapp", *APP, "--listen", "8000", "--chdir", "relative/dir"], "absolute path"),
    (["myapp", *APP, "--listen", "8000", "--user", "Bad User"], "--user"),
    (["myapp", *APP, "--listen", "8000", "--watchdog", "-1"], "--watchdog"),
    (["myapp", *APP, "--listen", "8000", "--stop-timeout", "abc"], "--stop-timeout"),
    (["myapp", *APP, "--listen", "8000", "--request-timeout", "-3"], "--request-timeout"),
    (["myapp", *APP, "--listen", "8000", "--request-timeout", "1e3"], "--request-timeout"),
    (["myapp", "--exec", "/bin/x", "--listen", "8000", "--request-timeout", "5"], "built-in runtime"),
    (["myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "10.0.0.1/8"], "network address 10.0.0.0/8"),
    (["myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "proxy.lan"], "host name"),
    (["myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "10.0.0.1,,::1"], "empty entry"),
    (["myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "*,10.0.0.1"], "give it alone"),
    (["myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "10.0.0.1\nUser=root"], "control character"),
    (["myapp", "--exec", "/bin/x", "--listen", "8000", "--forwarded-allow-ips", "10.0.0.1"], "built-in runtime"),
    (["myapp", "--exec", "myserver --port 1", "--listen", "8000"], "absolute path"),
    (["myapp", "--exec", "/bin/x 'unclosed", "--listen", "8000"], "quot"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[repr(a[0] if i < 4 else a) for i, (a, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], expected: str) -> None:
    result = sockact("generate", *args, "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_output_dir_is_a_usage_error(tmp_path: Path) -> None:
    result = sockact("generate", "myapp", *APP, "--listen", "8000", "--output-dir", str(tmp_path / "absent"))
    assert result.returncode == 2
    assert "create it first" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_access_log_is_off_unless_asked() -> None:
    plain = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "service", check=True).stdout
    assert "--access-log" not in plain
    logged = sockact("generate", "myapp", *APP, "--listen", "8000", "--access-log", "--only", "service",
                     check=True).stdout
    assert "--stop-timeout 30 --request-timeout 30 --respawn --access-log\n" in logged


@pytest.mark.parametrize("given,rendered", [
    ("127.0.0.1", "127.0.0.1"),
    (" 10.0.0.0/8 , ::1 ,UNIX", "10.0.0.0/8,::1,unix"),
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("*", "*"),
])
def test_forwarded_allow_ips_reaches_exec_start_in_canonical_form(given: str, rendered: str) -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", given, "--only", "service",
                   check=True).stdout
    assert f"--respawn --forwarded-allow-ips {rendered}\n" in text
    plain = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "service", check=True).stdout
    assert "--forwarded-allow-ips" not in plain  # off unless asked


def test_forwarded_allow_ips_is_explained() -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "10.0.0.0/8",
                   "--explain", check=True).stdout
    assert "--forwarded-allow-ips 10.0.0.0/8\n" in text and "only on connections from 10.0.0.0/8" in text
    everyone = sockact("generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "*", "--explain",
                       check=True).stdout
    assert "from every peer" in everyone
    assert "forwarded" not in sockact("generate", "myapp", *APP, "--listen", "8000", "--explain", check=True).stdout
