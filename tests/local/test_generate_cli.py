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
    names = ("myapp.socket", "myapp@.service", "myapp.target")
    assert result.stdout.splitlines() == [f"wrote {tmp_path / name}" for name in names]


@pytest.mark.parametrize(
    "listen,rendered",
    [
        (["8000"], ["ListenStream=8000"]),
        (["127.0.0.1:8080"], ["ListenStream=127.0.0.1:8080"]),
        (["[::1]:8080"], ["ListenStream=[::1]:8080"]),
        (["/run/myapp/http.sock"], ["ListenStream=/run/myapp/http.sock"]),
        (
            ["8000", "[::1]:9000", "/run/a.sock"],
            ["ListenStream=8000", "ListenStream=[::1]:9000", "ListenStream=/run/a.sock"],
        ),
    ],
)
def test_listen_forms(listen: list[str], rendered: list[str]) -> None:
    args = [arg for item in listen for arg in ("--listen", item)]
    text = sockact("generate", "myapp", *APP, *args, "--only", "socket", check=True).stdout
    assert [line for line in text.splitlines() if line.startswith("ListenStream=")] == rendered
    assert ("NoDelay=yes" in text) == any(not item.startswith("/") for item in listen)


def test_exec_runs_any_command_and_escapes_it() -> None:
    text = sockact(
        "generate",
        "myapp",
        "--exec",
        "/usr/bin/env FOO='a b' my$var 50%",
        "--listen",
        "8000",
        "--only",
        "service",
        check=True,
    ).stdout
    assert 'ExecStart=/usr/bin/env "FOO=a b" my$$var 50%%\n' in text


def test_watchdog_and_stop_timeout() -> None:
    text = sockact(
        "generate",
        "myapp",
        *APP,
        "--listen",
        "8000",
        "--watchdog",
        "10",
        "--stop-timeout",
        "12",
        "--only",
        "service",
        check=True,
    ).stdout
    assert "WatchdogSec=10\n" in text
    assert "TimeoutStopSec=12\n" in text
    assert "--stop-timeout 12 --request-timeout 30 --respawn\n" in text


def test_the_builtin_runtime_gets_a_watchdog_and_a_request_timeout_by_default() -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "service", check=True).stdout
    assert "WatchdogSec=10\n" in text
    assert "--request-timeout 30" in text
    text = sockact(
        "generate",
        "myapp",
        *APP,
        "--listen",
        "8000",
        "--watchdog",
        "0",
        "--request-timeout",
        "4.5",
        "--only",
        "service",
        check=True,
    ).stdout
    assert "WatchdogSec=" not in text
    assert "--request-timeout 4.5" in text
    off = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--request-timeout", "0", "--only", "service", check=True
    ).stdout
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
    (["myapp", *APP, "--listen", "0"], "out of range (1-65535)"),
    (["myapp", *APP, "--listen", "65536"], "out of range (1-65535)"),
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
    (["myapp", *APP, "--listen", "8000", "--max-body", "1.5M"], "--max-body '1.5M' is not a size"),
    (["myapp", *APP, "--listen", "8000", "--max-body", "-1"], "--max-body '-1' is not a size"),
    (["myapp", *APP, "--listen", "8000", "--max-body", "nan"], "--max-body 'nan' is not a size"),
    (["myapp", *APP, "--listen", "8000", "--max-body", "10T"], "--max-body '10T' is not a size"),
    (["myapp", *APP, "--listen", "8000", "--max-body", "2048G"], "from 0 to 1024G"),
    (["myapp", *APP, "--listen", "8000", "--max-body", "1G\nUser=root"], "control character"),
    (["myapp", *APP, "--listen", "8000", "--max-headers", "0"], "--max-headers '0': give a whole number"),
    (["myapp", *APP, "--listen", "8000", "--max-headers", "2e2"], "--max-headers '2e2': give a whole number"),
    (["myapp", *APP, "--listen", "8000", "--max-headers", "16385"], "from 1 to 16384"),
    (["myapp", *APP, "--listen", "8000", "--max-header-size", "0"], "from 1 to 64K"),
    (["myapp", *APP, "--listen", "8000", "--max-header-size", "65537"], "from 1 to 64K"),
    (["myapp", *APP, "--listen", "8000", "--max-header-size", "16KB"], "--max-header-size '16KB' is not a size"),
    (["myapp", *APP, "--listen", "8000", "--max-target", "1M"], "from 1 to 64K"),
    (["myapp", *APP, "--listen", "8000", "--max-target", "²"], "--max-target '²' is not a size"),
    (
        ["myapp", *APP, "--listen", "8000", "--head-timeout", "0"],
        "--head-timeout '0': give a number of seconds above 0",
    ),
    (["myapp", *APP, "--listen", "8000", "--head-timeout", "nan"], "--head-timeout 'nan'"),
    (["myapp", *APP, "--listen", "8000", "--keep-alive", "-5"], "--keep-alive '-5'"),
    (["myapp", *APP, "--listen", "8000", "--keep-alive", "inf"], "--keep-alive 'inf'"),
    (["myapp", *APP, "--listen", "8000", "--send-timeout", "1e3"], "--send-timeout '1e3'"),
    (["myapp", *APP, "--listen", "8000", "--send-timeout", "86401"], "at most 86400"),
    (
        ["myapp", "--exec", "/bin/x", "--listen", "8000", "--max-body", "1G"],
        "--max-body applies to the built-in runtime",
    ),
    (["myapp", "--exec", "/bin/x", "--listen", "8000", "--keep-alive", "15"], "--keep-alive applies to the built-in"),
    (["myapp", "--exec", "myserver --port 1", "--listen", "8000"], "absolute path"),
    (["myapp", "--exec", "/bin/x 'unclosed", "--listen", "8000"], "quot"),
    (
        ["myapp", *APP, "--listen", "8000", "--drain-delay", "30"],
        "--drain-delay 30 is not below --stop-timeout 30: the delay counts inside the stop timeout",
    ),
    (
        ["myapp", *APP, "--listen", "8000", "--drain-delay", "5", "--stop-timeout", "4.5"],
        "is not below --stop-timeout 4.5",
    ),
    (["myapp", *APP, "--listen", "8000", "--drain-delay", "-1"], "--drain-delay '-1': give a number of seconds"),
    (["myapp", *APP, "--listen", "8000", "--health-listen", "70000"], "--health-listen '70000': port 70000 is out of"),
]


@pytest.mark.parametrize(
    "args,expected", BAD_INPUTS, ids=[repr(a[0] if i < 4 else a) for i, (a, _) in enumerate(BAD_INPUTS)]
)
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
    logged = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--access-log", "--only", "service", check=True
    ).stdout
    assert "--stop-timeout 30 --request-timeout 30 --respawn --access-log\n" in logged


@pytest.mark.parametrize(
    "given,rendered",
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 10.0.0.0/8 , ::1 ,UNIX", "10.0.0.0/8,::1,unix"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("*", "*"),
    ],
)
def test_forwarded_allow_ips_reaches_exec_start_in_canonical_form(given: str, rendered: str) -> None:
    text = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", given, "--only", "service", check=True
    ).stdout
    assert f"--respawn --forwarded-allow-ips {rendered}\n" in text
    plain = sockact("generate", "myapp", *APP, "--listen", "8000", "--only", "service", check=True).stdout
    assert "--forwarded-allow-ips" not in plain  # off unless asked


def test_forwarded_allow_ips_is_explained() -> None:
    text = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "10.0.0.0/8", "--explain", check=True
    ).stdout
    assert "--forwarded-allow-ips 10.0.0.0/8\n" in text and "only on connections from 10.0.0.0/8" in text
    everyone = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--forwarded-allow-ips", "*", "--explain", check=True
    ).stdout
    assert "from every peer" in everyone
    assert "forwarded" not in sockact("generate", "myapp", *APP, "--listen", "8000", "--explain", check=True).stdout


LIMITS = [
    "--max-body",
    "1G",
    "--head-timeout",
    "20",
    "--keep-alive",
    "15",
    "--send-timeout",
    "60",
    "--max-headers",
    "200",
    "--max-header-size",
    "16K",
    "--max-target",
    "16K",
]


def exec_start_args(*options: str) -> list[str]:
    """The arguments after `sockact run` in the rendered ExecStart=, split as systemd splits plain words."""
    import shlex

    text = sockact("generate", "myapp", *APP, "--listen", "8000", *options, "--only", "service", check=True).stdout
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert not set("%$\\\"'") & set(line)  # plain words only: shlex splits them as systemd does
    argv = shlex.split(line.removeprefix("ExecStart="))
    return argv[argv.index("run") + 1 :]


def test_http_limits_reach_exec_start_in_order() -> None:
    assert exec_start_args(*LIMITS)[-14:] == [
        "--max-body",
        "1G",
        "--max-headers",
        "200",
        "--max-header-size",
        "16K",
        "--max-target",
        "16K",
        "--head-timeout",
        "20",
        "--keep-alive",
        "15",
        "--send-timeout",
        "60",
    ]


@pytest.mark.parametrize(
    "option,given,rendered",
    [
        ("--max-body", "1073741824", "1G"),
        ("--max-body", "1024m", "1G"),
        ("--max-body", "0", "0"),
        ("--max-body", "1536K", "1536K"),
        ("--max-body", "000100001", "100001"),
        ("--max-headers", "0200", "200"),
        ("--max-header-size", "16384", "16K"),
        ("--max-target", "64k", "64K"),
        ("--head-timeout", "020.50", "20.5"),
        ("--keep-alive", "15.000", "15"),
        ("--send-timeout", "0.25", "0.25"),
    ],
)
def test_http_limits_are_rendered_in_canonical_form(option: str, given: str, rendered: str) -> None:
    assert exec_start_args(option, given)[-2:] == [option, rendered]


def test_http_limits_equal_to_the_runtime_defaults_are_not_rendered() -> None:
    """Golden units stay as they are: a value that changes nothing is left out, however it is written."""
    plain = exec_start_args()
    assert plain == ["myproj.asgi:application", "--stop-timeout", "30", "--request-timeout", "30", "--respawn"]
    assert (
        exec_start_args(
            "--max-body",
            "100M",
            "--max-headers",
            "100",
            "--max-header-size",
            "8190",
            "--max-target",
            "8190",
            "--head-timeout",
            "10.0",
            "--keep-alive",
            "05",
            "--send-timeout",
            "30",
        )
        == plain
    )
    assert exec_start_args("--max-body", "104857600", "--keep-alive", "6")[-2:] == ["--keep-alive", "6"]


def test_rendered_http_limits_read_back_by_sockact_run_as_given() -> None:
    """ExecStart= parsed by `sockact run`'s own parser: a drift between the two sides fails here."""
    from sockact.runtime import http11
    from sockact.runtime.main import limits_of, parse

    assert limits_of(parse(exec_start_args())) == http11.DEFAULT_LIMITS
    limits = limits_of(parse(exec_start_args(*LIMITS)))
    assert limits == http11.Limits(
        max_body=1 << 30,
        head_timeout=20.0,
        keep_alive=15.0,
        send_timeout=60.0,
        max_fields=200,
        max_field=16 << 10,
        max_target=16 << 10,
    )
    assert limits_of(parse(exec_start_args("--max-body", "0", "--keep-alive", "0.5"))) == http11.Limits(
        max_body=0, keep_alive=0.5
    )


def test_http_limits_leave_the_stop_timeout_alone() -> None:
    text = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--stop-timeout", "12", *LIMITS, "--only", "service", check=True
    ).stdout
    assert "TimeoutStopSec=12\n" in text
    assert "--stop-timeout 12 --request-timeout 30 --respawn --max-body 1G" in text


def test_generate_help_states_the_runtime_defaults() -> None:
    """The generator's help names the defaults without importing the runtime's HTTP core; they must agree."""
    import argparse

    from sockact.cli.units import add_http_limits
    from sockact.generator.spec import HTTP_LIMITS
    from sockact.runtime import http11, sizes

    parser = argparse.ArgumentParser()
    add_http_limits(parser)
    helps = {action.option_strings[0]: action.help or "" for action in parser._actions if action.option_strings}
    for option, field in HTTP_LIMITS.items():
        default = getattr(http11.DEFAULT_LIMITS, field)
        shown = sizes.canonical(default) if isinstance(default, int) and option != "--max-headers" else f"{default:g}"
        assert helps[option].endswith(f"default: {shown})"), (option, helps[option])


def test_http_limits_are_explained_when_set() -> None:
    text = sockact("generate", "myapp", *APP, "--listen", "8000", *LIMITS, "--explain", check=True).stdout
    flat = " ".join(text.split())
    for said in (
        "--max-body 1G A request body above 1G is refused with 413",
        "--max-headers 200 A request with more than 200 header fields is refused with 431",
        "--max-header-size 16K A request with a header field line above 16K is refused with 431",
        "--max-target 16K A request target (path and query) above 16K is refused with 414",
        "--head-timeout 20 A request head still arriving after 20 s",
        "--keep-alive 15 An idle keep-alive connection is closed after 15 s. Default of sockact run: 5.",
        "--send-timeout 60 A client that takes no byte of its response for 60 s is dropped",
    ):
        assert said in flat, said
    unlimited = sockact(
        "generate", "myapp", *APP, "--listen", "8000", "--max-body", "0", "--explain", check=True
    ).stdout
    assert "Request bodies have no size limit" in unlimited
    plain = sockact("generate", "myapp", *APP, "--listen", "8000", "--explain", check=True).stdout
    assert not any(option in plain for option in ("--max-body", "--max-headers", "--keep-alive", "--send-timeout"))
