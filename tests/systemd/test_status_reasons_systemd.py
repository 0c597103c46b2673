"""`sockact status` and `sockact logs` say why workers do not run, on a real (private) systemd: a typo in
the app's module, a startup that raises, a --chdir that does not exist, an interpreter that is not there.
Each case asserts the named reason, the app's own line, the next step and status's exit status (3)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import sockact

from sockact.box import PrivateSystemd

PY = sys.executable
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def status(box: PrivateSystemd, name: str, *flags: str, as_user: tuple[str, ...] = ()) -> tuple[int, str]:
    result = box.run(*as_user, PY, "-m", "sockact", "status", name, *flags, check=False, timeout=60)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, result.stdout


def document(box: PrivateSystemd, name: str, as_user: tuple[str, ...] = ()) -> dict[str, Any]:
    code, out = status(box, name, "--json", as_user=as_user)
    found: dict[str, Any] = json.loads(out)
    assert (code == 0) == found["ok"]
    return found


def start_broken(box: PrivateSystemd, name: str, port: int, *options: str) -> None:
    """Units for one worker, the socket started, and the worker started without a visitor."""
    result = sockact(
        "generate",
        name,
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        *options,
        "--output-dir",
        str(box.unit_dir()),
    )
    assert result.returncode == 0, result.stderr
    box.daemon_reload()
    box.systemctl("start", f"{name}.socket")
    box.systemctl("start", "--no-block", f"{name}.target")


def reason_of(box: PrivateSystemd, name: str, needle: str) -> dict[str, Any]:
    """The status document once worker 1's reason mentions needle (the app or systemd needs a moment)."""
    seen: list[dict[str, Any]] = []

    def told() -> bool:
        seen.append(document(box, name))
        return needle in (seen[-1]["workers"][0]["reason"] or "")

    began = time.monotonic()
    try:
        box.wait_for(told, timeout=30, interval=0.2, what=f"{name}'s reason to mention {needle!r}")
    except Exception:
        print(json.dumps(seen[-1], indent=1))
        raise
    print(f"\n{name}: reason after {time.monotonic() - began:.1f} s: {seen[-1]['workers'][0]['reason']}")
    return seen[-1]


CASES = [
    # name, port, options, the reason's words, the app's or systemd's own line
    (
        "typo",
        8501,
        ("--app", "broken:app"),
        "the app failed to start",
        "cannot import broken: ModuleNotFoundError: No module named 'this_module_does_not_exist'",
    ),
    (
        "raises",
        8502,
        ("--app", "failstart:app"),
        "the app failed to start",
        "application startup failed: RuntimeError: database unreachable",
    ),
    (
        "nodir",
        8503,
        ("--app", "failstart:app", "--chdir", "/opt/sockact-test-no-such-dir"),
        "cannot enter the working directory /opt/sockact-test-no-such-dir (--chdir) (exit 200/CHDIR)",
        "Changing to the requested working directory failed: No such file or directory",
    ),
    (
        "noexec",
        8504,
        ("--app", "failstart:app", "--python", "/opt/sockact-test-no-such-venv/bin/python3"),
        "cannot execute the interpreter /opt/sockact-test-no-such-venv/bin/python3 (--python) (exit 203/EXEC)",
        "/opt/sockact-test-no-such-venv/bin/python3: No such file or directory",
    ),
]


@pytest.mark.parametrize(("name", "port", "options", "words", "line"), CASES, ids=[case[0] for case in CASES])
def test_status_and_logs_name_the_reason(
    private_systemd: PrivateSystemd,
    shared_apps: Path,
    name: str,
    port: int,
    options: tuple[str, ...],
    words: str,
    line: str,
) -> None:
    box = private_systemd
    chdir = () if "--chdir" in options else ("--chdir", str(shared_apps))
    python = () if "--python" in options else ("--python", PY)
    start_broken(box, name, port, *options, *chdir, *python)
    found = reason_of(box, name, line)
    worker = found["workers"][0]
    assert worker["reason"].startswith(words), worker
    assert found["ok"] is False and found["workers_running"] == 0
    assert found["next_step"] == worker["next_step"] and worker["next_step"]

    code, text = status(box, name)
    print(f"$ sockact status {name}   (exit {code})\n{text}")
    assert code == 3
    assert text.startswith(f"{name}: 0 of 1 workers running")
    # the state word can change between the two calls (retrying, restarting, starting)
    assert re.search(rf"^@1 [a-z ]+: {re.escape(words)}", text, re.MULTILINE) and line in text
    assert f"Next: {worker['next_step']}" in text

    # Without journal access the words still come from systemd (and STATUS=), with the way to the logs;
    # a worker restarted every 0.1 s shows its exit only between two starts.
    plain: list[dict[str, Any]] = []

    def reason_as_nobody() -> bool:
        plain.append(document(box, name, as_user=NOBODY))
        return bool(plain[-1]["workers"][0]["reason"])

    box.wait_for(reason_as_nobody, timeout=10, what=f"{name}'s reason as nobody")
    assert plain[-1]["workers"][0]["reason"].startswith(words), plain[-1]["workers"][0]
    assert plain[-1]["ok"] is False and plain[-1]["next_step"]
    if words == "the app failed to start":
        assert f"`sudo sockact logs {name}`" in plain[-1]["next_step"]

    logs = box.run(PY, "-m", "sockact", "logs", name, check=False, timeout=60)
    print(f"$ sockact logs {name}\n{logs.stdout}{logs.stderr}")
    assert logs.returncode == 0, logs.stderr
    assert line in logs.stdout + logs.stderr
    if words == "the app failed to start":  # one line per attempt above; the whole traceback at debug priority
        debug = box.run("journalctl", "-u", f"{name}@1.service", "-p", "7..7", "-o", "cat", timeout=30).stdout
        assert "Traceback (most recent call last):" in debug, debug
        errors = box.run("journalctl", "-u", f"{name}@1.service", "-p", "0..6", "-o", "cat", timeout=30).stdout
        assert "Traceback" not in errors, errors
    box.systemctl("stop", f"{name}.target", f"{name}.socket")
    box.systemctl("reset-failed", check=False)


def test_an_exec_app_systemd_gave_up_on_says_why_not_only_start_request_repeated(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    """An --exec server has systemd's start limit: after 10 quick failures the journal's last lines are
    systemd's "Start request repeated too quickly"; status and logs still show the app's own line."""
    box = private_systemd
    script = shared_apps / "needs_env.py"
    script.write_text("import sys\nsys.exit('DATABASE_URL is not set')\n")
    script.chmod(0o644)
    start_broken(box, "gaveup", 8507, "--exec", f"/usr/bin/python3 {script}")
    box.wait_for(
        lambda: box.show("gaveup@1.service", "ActiveState")["ActiveState"] == "failed",
        timeout=30,
        what="gaveup@1 to hit its start limit",
    )
    found = document(box, "gaveup")
    reason = found["workers"][0]["reason"]
    code, text = status(box, "gaveup")
    print(f"\n$ sockact status gaveup   (exit {code})\n{text}")
    assert reason == (
        "the app exited with status 1; systemd stopped restarting it (it failed too often in a short "
        "time): DATABASE_URL is not set"
    )
    assert found["next_step"].endswith("then `sudo sockact start gaveup`") and code == 3
    logs = box.run(PY, "-m", "sockact", "logs", "gaveup", "-n", "5", check=False, timeout=60)
    print(f"$ sockact logs gaveup -n 5\n{logs.stdout}{logs.stderr}")
    assert "Start request repeated too quickly" in logs.stdout
    assert "DATABASE_URL is not set" not in logs.stdout  # pushed out of the last 5 lines by systemd's own
    assert logs.stderr.startswith("sockact: gaveup@1 (failed): the app exited with status 1; ")
    assert logs.stderr.rstrip().endswith(": DATABASE_URL is not set")
    box.systemctl("stop", "gaveup.target", "gaveup.socket")
    box.systemctl("reset-failed", check=False)


def test_a_healthy_app_status_is_ok_and_zero(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    start_broken(box, "fine", 8505, "--app", "sockact.examples.hello:app", "--python", PY)
    box.wait_for(lambda: document(box, "fine")["workers_running"] == 1, what="fine@1 running")
    code, text = status(box, "fine")
    assert code == 0 and "Next:" not in text
    box.systemctl("stop", "fine.target")
    idle = document(box, "fine")
    assert idle["ok"] is True and idle["workers_running"] == 0  # the socket waits for its first connection
    box.systemctl("stop", "fine.socket")
    closed = document(box, "fine")
    assert closed["ok"] is False and closed["next_step"] == "start it: `sudo sockact start fine`"
