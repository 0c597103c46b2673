"""Parsing and formatting in the operator commands, no systemd needed: show blocks, /proc/net, STATUS=, journal."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import sockact

from sockact import cli, contract
from sockact.errors import NotOursError, PermissionNeeded, SystemdError, UsageError
from sockact.generator import spec
from sockact.generator.render import render
from sockact.ops import facts, status
from sockact.ops.app import wanted_indexes
from sockact.ops.logs import LogQuery, format_record, journal_argv
from sockact.ops.scale import target_for, worker_count
from sockact.ops.systemctl import failure, message, parse_show_block
from sockact.ops.table import age, duration, mebibytes, table

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:CBE8 0100007F:1F40 01 00000000:00000009 03:00000EC3 00000000     0        0 0 3 0
   2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:0000000C 00:0 0 0 0 7
   1: 00000000000000000000000001000000:1F42 00000000000000000000000000000000:0000 0A 00000000:00000002 00:0 0 0 0 8
"""
SS_UNIX = """\
u_str LISTEN 0      4096   /run/systemd/private 271952 * 0
u_str LISTEN 5      4096   /run/my app.sock 271953 * 0
u_str ESTAB  0      0      /run/x.sock 271954 * 0
"""


def test_show_blocks_keep_repeated_properties() -> None:
    block = "Id=web.socket\nListen=127.0.0.1:8000 (Stream)\nListen=/run/web.sock (Stream)\nStatusText=a=b"
    props = parse_show_block(block)
    assert props["Listen"].splitlines() == ["127.0.0.1:8000 (Stream)", "/run/web.sock (Stream)"]
    assert props["StatusText"] == "a=b"


def test_tcp_accept_queues_come_from_listening_rows_only() -> None:
    v4 = facts.tcp_listen_queues(PROC_NET_TCP)
    assert v4 == {("127.0.0.1", 8000): 3, ("0.0.0.0", 8001): 0}
    v6 = facts.tcp_listen_queues(PROC_NET_TCP6)
    assert v6 == {("::", 8000): 12, ("::1", 8002): 2}


def test_unix_accept_queues_from_ss() -> None:
    assert facts.unix_listen_queues(SS_UNIX) == {"/run/systemd/private": 0, "/run/my app.sock": 5}


def test_listen_addresses_from_systemd() -> None:
    assert facts.listen_address("[::]:8000 (Stream)") == "[::]:8000"
    assert facts.listen_address("/run/a (b).sock (Stream)") == "/run/a (b).sock"


def test_status_text_counters() -> None:
    serving = "serving: 1204 requests, 3 in flight, 10.5 req/s; ready since 2026-01-01 12:00:00"
    assert contract.parse_status(serving) == (1204, 3, 10.5, None, None, None, None, 0)
    assert contract.parse_status(serving).not_serving is None
    assert contract.parse_status(serving + "; serving process replaced 7 times").replaced == 7
    assert contract.parse_status("draining: 2 in flight")[:3] == (None, 2, None)
    assert contract.parse_status("something else") == (None, None, None, None, None, None, None, 0)


def test_the_runtime_status_line_says_how_often_the_serving_process_was_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sockact.runtime.notify import Notifier
    from sockact.runtime.pulse import Pulse

    monkeypatch.setenv("SOCKACT_REPLACED", "3")
    line = Pulse(Notifier(sender=lambda state: None), None).status_line(10, 1, 2.0)
    assert contract.parse_status(line) == (10, 1, 2.0, None, None, None, None, 3)


def test_status_text_with_stuck_threads_or_a_blocked_loop() -> None:
    partly = (
        "serving: 50 requests, 4 in flight, 2.0 req/s; 3 of 10 threads stuck for 45 s; ready since 2026-01-01 12:00:00"
    )
    counters = contract.parse_status(partly)
    assert counters == contract.Counters(50, 4, 2.0, 3, 10, 45.0, None, 0)
    assert counters.not_serving is None  # 7 threads still serve
    whole = contract.parse_status(partly.replace("3 of 10", "10 of 10"))
    assert whole.not_serving == "10 of 10 threads stuck for 45 s"
    blocked = contract.parse_status(
        "serving: 7 requests, 1 in flight, 0.0 req/s; event loop blocked for 12 s; ready since 2026-01-01 12:00:00"
    )
    assert blocked[:3] == (7, 1, 0.0) and blocked.not_serving == "event loop blocked for 12 s"


def test_status_text_the_runtime_writes_is_what_status_parses() -> None:
    from sockact.runtime.notify import Notifier
    from sockact.runtime.pulse import Pulse
    from sockact.runtime.stuck import Verdict

    pulse = Pulse(Notifier(sender=lambda state: None), None)
    pulse.ready_since = "2026-01-01 12:00:00"
    line = pulse.status_line(9, 3, 1.5, Verdict(3, 3, 44.6).text)
    assert contract.parse_status(line) == (9, 3, 1.5, 3, 3, 45.0, None, 0)
    assert contract.parse_status(line).not_serving == "3 of 3 threads stuck for 45 s"
    assert contract.parse_status(pulse.status_line(9, 3, 1.5, Verdict(0, 3, 0.0).text)).threads_stuck is None
    assert contract.parse_status(pulse.status_line(9, 1, 0.0, "event loop blocked for 6 s")).not_serving == (
        "event loop blocked for 6 s"
    )


def test_status_shows_a_running_worker_that_serves_nothing_as_not_serving() -> None:
    from sockact.ops.app import App

    app = App("demo", {}, {"Wants": "demo@1.service demo@2.service"}, {})
    props = {
        "ActiveState": "active",
        "SubState": "running",
        "MainPID": "42",
        "NRestarts": "0",
        "StatusText": "serving: 5 requests, 3 in flight, 0.0 req/s; 3 of 3 threads stuck for 45 s; ready since x",
    }
    stuck = status._worker(app, 1, props, None, None)
    fine = status._worker(app, 2, {**props, "StatusText": props["StatusText"].replace("3 of 3", "1 of 3")}, None, None)
    assert (stuck.state, stuck.not_serving, stuck.threads_stuck) == ("not serving", "3 of 3 threads stuck for 45 s", 3)
    assert (fine.state, fine.not_serving, fine.threads_stuck) == ("running", None, 1)
    shown = status.render(
        status.Status(
            "demo",
            100.0,
            {"unit": "demo.target", "state": "active", "workers_wanted": 2},
            {"unit": "demo.socket", "state": "active", "sub_state": "listening", "enabled": "enabled", "listen": []},
            [stuck, fine],
        )
    )
    assert shown.startswith("demo: 1 of 2 workers running, 1 not serving (demo.target active)")
    assert "not serving (3 of 3 threads stuck for 45 s)" in shown and "running (1 thread stuck)" in shown
    assert "Next: a worker serves nothing: systemd's watchdog restarts it" in shown


def _record(unit: str, ident: str, seconds: float, **fields: str) -> dict[str, str]:
    return {"UNIT": unit, "MESSAGE_ID": ident, "__REALTIME_TIMESTAMP": str(int(seconds * 1e6)), **fields}


def test_last_exit_is_the_newest_per_unit_with_its_result() -> None:
    records = [
        _record("a@1.service", status.PROCESS_EXITED, 10, EXIT_CODE="killed", EXIT_STATUS="9"),
        _record("a@1.service", status.UNIT_FAILED, 10.001, UNIT_RESULT="signal"),
        _record("a@2.service", status.PROCESS_EXITED, 11, EXIT_CODE="exited", EXIT_STATUS="3"),
        _record("a@2.service", status.UNIT_FAILED, 11, UNIT_RESULT="exit-code"),
        _record("a@2.service", status.UNIT_DEACTIVATED, 20),
        _record("a@3.service", status.PROCESS_EXITED, 12, EXIT_CODE="dumped", EXIT_STATUS="6"),
        _record("a@3.service", status.UNIT_FAILED, 12, UNIT_RESULT="watchdog"),
    ]
    exits = status.last_exits(records)
    assert exits["a@1.service"] == status.LastExit("SIGKILL", "signal", 10, "killed", 9)
    assert exits["a@2.service"] == status.LastExit("stopped", "success", 20)
    assert exits["a@3.service"].reason == "SIGABRT, core dumped"
    assert status._last_exit(exits["a@3.service"], now=72) == "SIGABRT, core dumped (watchdog), 1m ago"


def test_state_words() -> None:
    assert status.state_word("active", "running") == "running"
    assert status.state_word("activating", "auto-restart") == "restarting"
    assert status.state_word("activating", "start") == "starting"
    assert (
        status.state_word("activating", "start", "cannot start: cannot import x; retrying in 4 s (attempt 3)")
        == "retrying"
    )
    assert status.state_word("deactivating", "stop-sigterm") == "draining"
    assert status.state_word("inactive", "dead") == "stopped"
    assert status.state_word("failed", "failed") == "failed"


def _target_text(workers: str) -> str:
    units = render(
        spec.build(unit_name="web", listen=["8000"], python_path=sys.executable, app_ref="m:app", worker_count=workers)
    )
    return next(unit.text for unit in units if unit.kind == "target")


def test_scale_renders_the_target_again_for_the_new_count() -> None:
    before = _target_text("2")
    after = target_for(before, "web", 4).text
    assert "Wants=web@1.service web@2.service web@3.service web@4.service\n" in after
    assert "Description=web: 4 workers (sockact)\n" in after
    assert after == _target_text("4")  # the same file `generate --workers 4` writes
    older = before.replace("for systemd 252.", "for systemd 247.")  # rendered for another host's systemd
    assert target_for(older, "web", 3).text == _target_text("3").replace("for systemd 252.", "for systemd 247.")
    assert wanted_indexes("web", "web@2.service web@10.service other@1.service web.socket") == (2, 10)


def test_scale_refuses_a_target_edited_by_hand() -> None:
    for edited in (
        _target_text("2") + "Wants=extra.service\n",
        _target_text("2") + "After=network.target\n",
        _target_text("2").replace("Wants=web@1.service ", "Wants="),
    ):
        with pytest.raises(NotOursError, match="differs from what sockact writes"):
            target_for(edited, "web", 3)


def test_scale_count() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count("7") == 7
    with pytest.raises(UsageError, match="scale: N '0'"):
        worker_count("0")


def test_human_units_and_tables() -> None:
    assert [duration(s) for s in (None, 3, 123, 3720, 3 * 86400 + 4 * 3600)] == ["-", "3s", "2m03s", "1h02m", "3d04h"]
    assert [age(s) for s in (5, 200, 7300, 90000)] == ["5s", "3m", "2h", "1d"]
    assert mebibytes(32715571) == "31.2M"
    assert table(["A", "LONG"], [["xyz", "1"]]) == "A    LONG\nxyz  1"


def test_status_table_shows_every_column() -> None:
    worker = status.Worker(
        instance=2,
        unit="web@2.service",
        wanted=True,
        state="running",
        active_state="active",
        sub_state="running",
        pid=4242,
        uptime_seconds=125,
        restarts=1,
        rss_bytes=32715571,
        cpu_percent=12.34,
        requests=1204,
        in_flight=3,
        requests_per_second=10.5,
        status_text="",
        last_exit=status.LastExit("SIGKILL", "signal", 100),
    )
    snapshot = status.Status(
        app="web",
        time=160,
        target={"unit": "web.target", "state": "active", "workers_wanted": 2},
        socket={
            "unit": "web.socket",
            "state": "active",
            "sub_state": "running",
            "enabled": "enabled",
            "listen": [{"address": "127.0.0.1:8000", "type": "Stream", "backlog": 7}],
        },
        workers=[worker],
    )
    text = status.render(snapshot)
    assert text.startswith("web: 1 of 2 workers running (web.target active)\n")
    assert "web.socket  active (running)  enabled  127.0.0.1:8000  7" in text
    row = next(line for line in text.splitlines() if line.startswith("@2 ")).split()
    assert text.splitlines()[-1] == "Next: start the missing workers: `sudo sockact start web`"
    assert row == ["@2", "running", "4242", "2m05s", "1", "31.2M", "12.3", "1204", "3", "10.5", "SIGKILL,", "1m", "ago"]
    assert snapshot.as_json()["schema"] == "sockact-status/1"


def test_journal_lines_are_tagged_with_their_worker() -> None:
    own = {
        "_SYSTEMD_UNIT": "web@2.service",
        "_PID": "77",
        "MESSAGE": "one\ntwo",
        "PRIORITY": "3",
        "__REALTIME_TIMESTAMP": "0",
    }
    about = {
        "_SYSTEMD_UNIT": "init.scope",
        "UNIT": "web@1.service",
        "_PID": "1",
        "MESSAGE": "Started it.",
        "__REALTIME_TIMESTAMP": "0",
    }
    lines = format_record("web", own, colour=False).splitlines()
    assert [line.split(None, 2)[2] for line in lines] == ["web@2       one", "web@2       two"]
    assert "web@1       systemd: Started it." in format_record("web", about, colour=False)
    coloured = format_record("web", own, colour=True)
    assert "\x1b[31mone" in coloured and "\x1b[0m" in coloured
    assert message({"MESSAGE": list(b"caf\xc3\xa9")}) == "café"


def test_journal_arguments() -> None:
    from sockact.ops.app import App

    app = App("web", {}, {"Wants": "web@1.service web@2.service"}, {})
    every = journal_argv(LogQuery("web"), app)
    assert "--unit=web@*.service" in every and "--unit=web@2.service" in every and "--lines=20" in every
    assert "--unit=web.socket" in every and "--follow" not in every
    one = journal_argv(LogQuery("web", follow=True, worker=2, priority="warning"), app)
    assert [arg for arg in one if arg.startswith("--unit")] == ["--unit=web@2.service"]
    assert {"--follow", "--lines=10", "--priority=warning"} <= set(one)


def test_systemctl_failures_become_one_line_errors() -> None:
    down = failure(["systemctl", "show", "x"], "System has not been booted with systemd as init system (PID 1).\n")
    assert isinstance(down, SystemdError) and str(down).startswith("systemd is not reachable")
    denied = failure(
        ["systemctl", "--no-ask-password", "restart", "x"],
        "Failed to restart x: Interactive authentication required.\nSee system logs\n",
    )
    assert isinstance(denied, PermissionNeeded) and "sudo" in str(denied) and "--no-ask-password" not in str(denied)
    other = failure(["systemctl", "start", "x"], 'Job for x failed.\nSee "systemctl status x" for details.\n')
    assert str(other) == "`systemctl start x` failed: Job for x failed."


@pytest.mark.parametrize("command", ["install", "uninstall", "list", "status", "scale", "reload", "logs"])
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert f"sockact {command}" in capsys.readouterr().out.split("example", 1)[1]


def test_bad_arguments_are_one_line_usage_errors() -> None:
    for argv in (
        ["status", "web", "--watch", "0"],
        ["logs", "web", "-n", "x"],
        ["logs", "web", "-p", "loud"],
        ["scale", "web"],
    ):
        result = sockact(*argv)
        assert result.returncode == 2, argv
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_systemd_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(
        "#!/bin/sh\necho 'System has not been booted with systemd as init system (PID 1). "
        "Can'\\''t operate.' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    for argv in (["status", "web"], ["logs", "web"], ["list", "--unit-dir", str(tmp_path)]):
        (tmp_path / "web.target").write_text("# Generated by sockact 0.1.0.\n[Unit]\n")
        result = sockact(*argv, env=env)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.startswith("sockact: systemd is not reachable"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_operator_commands_do_not_load_the_generator() -> None:
    code = (
        "import sys\nfrom sockact import cli\nfrom sockact.ops import logs, manage, reload, scale, status\n"
        "cli.build_parser()\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
