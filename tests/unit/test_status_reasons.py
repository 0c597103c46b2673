"""Why a worker is not running, in words (its exit status named, the app's own line, the next step),
and the exit status of `sockact status`: the parts that need no systemd."""

from __future__ import annotations

from typing import Any

from sockact.ops import reasons, status
from sockact.ops.app import App

PROCESS_EXITED, UNIT_FAILED, SPAWN_FAILED = reasons.PROCESS_EXITED, reasons.UNIT_FAILED, reasons.SPAWN_FAILED


# --- reasons in words ------------------------------------------------------------------------------


def test_exit_statuses_are_named_with_what_failed() -> None:
    exec_failed = reasons.explain(
        "web",
        "restarting",
        "",
        reasons.Exit("exited", 203, "exit-code"),
        "Failed to locate executable /root/.pyenv/bin/python3: Permission denied",
        journal=True,
    )
    assert exec_failed is not None
    assert exec_failed.text() == (
        "cannot execute the interpreter (--python) (exit 203/EXEC): "
        "Failed to locate executable /root/.pyenv/bin/python3: Permission denied"
    )
    assert "/usr/bin/python3 -m venv" in exec_failed.next_step
    chdir = reasons.explain("web", "restarting", "", reasons.Exit("exited", 200), None, journal=False)
    assert chdir is not None and chdir.text() == "cannot enter the working directory (--chdir) (exit 200/CHDIR)"
    named = reasons.explain(
        "web",
        "restarting",
        "",
        reasons.Exit("exited", 200),
        None,
        journal=False,
        paths={"WorkingDirectory": "/srv/gone"},
    )
    assert named is not None
    assert named.reason == "cannot enter the working directory /srv/gone (--chdir) (exit 200/CHDIR)"
    assert named.next_step.startswith("create /srv/gone or give another --chdir")
    exec_start = "{ path=/srv/venv/bin/python3 ; argv[]=/srv/venv/bin/python3 -m sockact run m:app ; ignore_errors=no }"
    program = reasons.explain(
        "web", "restarting", "", reasons.Exit("exited", 203), None, journal=False, paths={"ExecStart": exec_start}
    )
    assert program is not None
    assert program.reason == "cannot execute the interpreter /srv/venv/bin/python3 (--python) (exit 203/EXEC)"
    app = reasons.explain("web", "restarting", "", reasons.Exit("exited", 3), "cannot import web: boom", journal=False)
    assert app is not None and app.text() == "the app failed to start (exit 3): cannot import web: boom"
    assert "`sudo sockact logs web`" in app.next_step  # no journal access: say how to get it
    recycled = reasons.explain("web", "restarting", "", reasons.Exit("exited", 4), None, journal=True)
    assert recycled is not None and recycled.reason.startswith("recycled (--max-requests or --max-rss")
    watchdog = reasons.explain("web", "restarting", "", reasons.Exit("dumped", 6, "watchdog"), None, journal=True)
    assert watchdog is not None and watchdog.reason.startswith("its serving loop stopped answering")
    assert "(SIGABRT, core dumped)" in watchdog.reason
    exec_cmd = reasons.explain("web", "restarting", "", reasons.Exit("exited", 203), None, journal=True, exec_app=True)
    assert exec_cmd is not None and exec_cmd.reason.startswith("cannot execute the command (--exec)")
    other = reasons.explain("web", "restarting", "", reasons.Exit("exited", 1), None, journal=True, exec_app=True)
    assert other is not None and other.reason == "the app exited with status 1"


def test_nothing_failed_means_no_reason() -> None:
    assert reasons.explain("web", "running", "", None, None, journal=True) is None
    assert reasons.explain("web", "stopped", "", reasons.Exit("exited", 0, "success"), None, journal=True) is None
    # a worker running again after a crash: its last exit is history, not a reason
    assert reasons.explain("web", "running", "", reasons.Exit("killed", 9), None, journal=True) is None


def test_a_worker_waiting_to_retry_gives_the_apps_own_reason() -> None:
    text = "cannot start: application startup failed: RuntimeError: database unreachable; retrying in 4 s (attempt 3)"
    why = reasons.explain("web", "retrying", text, None, None, journal=True)
    assert why is not None
    assert why.text() == "the app failed to start: application startup failed: RuntimeError: database unreachable"
    assert "try again by themselves" in why.next_step


def _rec(
    message: str, *, ident: str = "", invocation: str = "A", pid: str = "1", priority: str = "6", **fields: str
) -> dict[str, Any]:
    record: dict[str, Any] = {"MESSAGE": message, "_PID": pid, "PRIORITY": priority, **fields}
    if ident:
        record["MESSAGE_ID"] = ident
    if pid == "1":
        record["INVOCATION_ID"] = invocation
    else:
        record["_SYSTEMD_INVOCATION_ID"] = invocation
    return record


def test_the_reason_line_is_the_specific_error_of_the_last_failed_invocation() -> None:
    newest_first = [
        _rec("Starting web@1.service...", invocation="C"),
        _rec("web@1.service: Failed with result 'exit-code'.", ident=UNIT_FAILED, invocation="B", priority="4"),
        _rec(
            "web@1.service: Main process exited, code=exited, status=203/EXEC",
            ident=PROCESS_EXITED,
            invocation="B",
            priority="5",
            EXIT_CODE="exited",
            EXIT_STATUS="203",
        ),
        _rec(
            "web@1.service: Failed at step EXEC spawning /srv/venv/bin/python3: No such file or directory",
            ident=SPAWN_FAILED,
            invocation="B",
            pid="812",
            priority="3",
        ),
        _rec(
            "web@1.service: Failed to locate executable /srv/venv/bin/python3: No such file or directory",
            invocation="B",
            pid="812",
            priority="3",
        ),
        _rec("Start request repeated too quickly.", invocation="B", priority="3"),
        _rec(
            "web@1.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED",
            ident=PROCESS_EXITED,
            invocation="A",
            priority="5",
        ),
        _rec("cannot import web: old error — retrying in 1 s (attempt 1)", invocation="A", pid="700", priority="3"),
    ]
    assert reasons.reason_line(newest_first) == (
        "Failed to locate executable /srv/venv/bin/python3: No such file or directory"
    )
    # the app's own error line, without the runtime's wait, and never one of an older invocation
    app_failed = [
        _rec("Main process exited, code=exited, status=3/NOTIMPLEMENTED", ident=PROCESS_EXITED, invocation="B"),
        _rec(
            "cannot import web: ModuleNotFoundError: No module named 'wbe' — retrying in 2 s (attempt 2)",
            invocation="B",
            pid="900",
            priority="3",
        ),
        _rec("Main process exited, code=exited, status=3/NOTIMPLEMENTED", ident=PROCESS_EXITED, invocation="A"),
        _rec("an older error", invocation="A", pid="800", priority="3"),
    ]
    assert reasons.reason_line(app_failed) == "cannot import web: ModuleNotFoundError: No module named 'wbe'"
    # an --exec app's traceback goes to stderr (priority info): its last line says why
    exec_app = [
        _rec("Main process exited, code=exited, status=1/FAILURE", ident=PROCESS_EXITED, invocation="B"),
        _rec("KeyError: 'DATABASE_URL'", invocation="B", pid="901"),
        _rec("Traceback (most recent call last):", invocation="B", pid="901"),
        _rec("Started web@1.service.", invocation="B"),
    ]
    assert reasons.reason_line(exec_app) == "KeyError: 'DATABASE_URL'"
    assert (
        reasons.reason_line(
            [
                _rec("Main process exited", ident=PROCESS_EXITED, invocation="B"),
                _rec("Stopped web@1.service.", invocation="B"),
            ]
        )
        is None
    )


def test_reason_lines_are_grouped_by_the_unit_they_are_about() -> None:
    exited = {"UNIT": "web@2.service", "EXIT_CODE": "exited", "EXIT_STATUS": "200"}
    records = [
        _rec("Main process exited, code=exited, status=200/CHDIR", ident=PROCESS_EXITED, invocation="X", **exited),
        # the process setup's line: journald may not have seen its cgroup, UNIT= names the worker
        _rec(
            "web@2.service: Changing to the requested working directory failed: No such file or directory",
            invocation="X",
            pid="77",
            priority="3",
            UNIT="web@2.service",
        ),
        _rec("a line of another worker", invocation="Y", pid="78", priority="3", _SYSTEMD_UNIT="web@3.service"),
    ]
    assert reasons.reason_lines("web", records, ["web@2.service"]) == {
        "web@2.service": "Changing to the requested working directory failed: No such file or directory"
    }


# --- status: reasons, exit status, next step -------------------------------------------------------


def _status(workers: list[status.Worker], target_state: str = "active", socket_state: str = "active") -> status.Status:
    return status.Status(
        "web",
        100.0,
        {"unit": "web.target", "state": target_state, "workers_wanted": 2},
        {"unit": "web.socket", "state": socket_state, "sub_state": "listening", "enabled": "enabled", "listen": []},
        workers,
    )


def test_status_names_each_failed_worker_and_is_not_ok_when_fewer_run_than_wanted() -> None:
    app = App("web", {}, {"Wants": "web@1.service web@2.service"}, {})
    running = status._worker(
        app,
        1,
        {
            "ActiveState": "active",
            "SubState": "running",
            "MainPID": "42",
            "StatusText": "serving: 1 requests, 0 in flight, 0.0 req/s",
        },
        None,
        None,
    )
    failed = status._worker(
        app,
        2,
        {
            "ActiveState": "activating",
            "SubState": "auto-restart",
            "ExecMainCode": "1",
            "ExecMainStatus": "203",
            "Result": "exit-code",
            "NotifyAccess": "all",
        },
        None,
        None,
        "Failed to locate executable /srv/venv/bin/python3: Permission denied",
        True,
    )
    assert failed.reason == (
        "cannot execute the interpreter (--python) (exit 203/EXEC): "
        "Failed to locate executable /srv/venv/bin/python3: Permission denied"
    )
    snapshot = _status([running, failed])
    assert not snapshot.ok and snapshot.next_step == failed.next_step
    document = snapshot.as_json()
    assert (document["ok"], document["workers_running"], document["next_step"]) == (False, 1, failed.next_step)
    assert document["workers"][1]["reason"] == failed.reason
    text = status.render(snapshot)
    assert text.startswith("web: 1 of 2 workers running")
    assert f"@2 restarting: {failed.reason}" in text and f"Next: {failed.next_step}" in text


def test_status_between_two_quick_starts_takes_the_exit_from_the_journal() -> None:
    app = App("web", {}, {"Wants": "web@1.service"}, {})
    last = status.LastExit("exit 200/CHDIR", "exit-code", 99.0, "exited", 200)
    starting = status._worker(
        app, 1, {"ActiveState": "activating", "SubState": "start", "ExecMainCode": "0"}, None, last, None, False
    )
    assert starting.reason == "cannot enter the working directory (--chdir) (exit 200/CHDIR)"
    assert "`sudo sockact logs web`" in (starting.next_step or "")


def test_a_socket_waiting_for_its_first_connection_is_ok() -> None:
    app = App("web", {}, {"Wants": "web@1.service web@2.service"}, {})
    idle = [status._worker(app, i, {"ActiveState": "inactive", "SubState": "dead"}, None, None) for i in (1, 2)]
    waiting = _status(idle, target_state="inactive")
    assert waiting.ok and waiting.next_step is None
    assert "the first connection to the socket starts them" in status.render(waiting)
    closed = _status(idle, target_state="inactive", socket_state="inactive")
    assert not closed.ok and closed.next_step == "start it: `sudo sockact start web`"


def test_the_runtime_and_status_agree_on_the_retry_text() -> None:
    from sockact.contract import CANNOT_START, app_reason

    text = f"{CANNOT_START}cannot import x: ImportError: y; retrying in 30 s (attempt 9)"
    assert app_reason(text) == "cannot import x: ImportError: y"
    assert reasons.clean_line("cannot import x: ImportError: y — retrying in 0.5 s (attempt 1)") == (
        "cannot import x: ImportError: y"
    )


def test_a_worker_systemd_gave_up_on_says_both_why_and_how_to_start_it_again() -> None:
    why = reasons.explain(
        "web", "failed", "", reasons.Exit("exited", 1, "start-limit-hit"), "KeyError: 'X'", journal=True, exec_app=True
    )
    assert why is not None
    assert why.text() == (
        "the app exited with status 1; systemd stopped restarting it (it failed too often in a "
        "short time): KeyError: 'X'"
    )
    assert why.next_step.endswith("then `sudo sockact start web`")
