"""The default sandbox under a real systemd: its systemd-analyze security score, the score of every option
that lifts part of it, and apps that still work inside it (ASGI, WSGI, Django's startproject, port 80)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxutil import http_get

from sockact.box import PrivateSystemd
from sockact.cli import main as cli_main
from sockact.generator import explain, sandbox
from sockact.ops.security import parse_score, security_score

PROBE = "sandbox_probe:app"
# name: (port, options after NAME); started by the tests that need them, all loaded with one daemon-reload.
APPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "probe": (8300, ("--app", PROBE)),
    "jit": (8301, ("--app", PROBE, "--allow-jit")),
    "fixed": (8302, ("--app", PROBE, "--user", "www-data", "--state-dir", "fixed-probe")),
    "port80": (80, ("--app", PROBE)),
    "wsgi": (8304, ("--app", "wsgi_hello:application")),
    "djasgi": (8305, ("--app", "myproj.asgi:application")),
    "djwsgi": (8306, ("--app", "myproj.wsgi:application")),
}


def generate(box: PrivateSystemd, name: str, port: int, *options: str) -> None:
    """`sockact generate ... --output-dir` in this process (the CLI's own code path, no interpreter start-up)."""
    argv = [
        "generate",
        name,
        "--listen",
        str(port),
        "--workers",
        "1",
        "--python",
        sys.executable,
        "--output-dir",
        str(box.unit_dir()),
        *options,
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli_main(argv)
    assert code == 0, err.getvalue()


def start_django_project(directory: Path) -> None:
    """Django's own starter project, default settings untouched."""
    result = subprocess.run(
        [sys.executable, "-m", "django", "startproject", "myproj", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"Django is part of the test extra (pip install '.[test]'): {result.stderr}"
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def box(private_systemd: PrivateSystemd, shared_apps: Path) -> Iterator[PrivateSystemd]:
    """Every app and every score variant of this module, loaded at once."""
    django_dir = shared_apps / "django"
    django_dir.mkdir()
    start_django_project(django_dir)
    writable = shared_apps / "fixed-writable"
    writable.mkdir()
    os.chown(writable, 33, 33)  # www-data on Debian
    for name, (port, options) in APPS.items():
        chdir = django_dir if name.startswith("dj") else shared_apps
        extra = ("--writable", str(writable), "--env", f"PROBE_WRITABLE={writable}") if name == "fixed" else ()
        generate(private_systemd, name, port, *options, "--chdir", str(chdir), *extra)
    for index, (options, _) in enumerate(explain.OPTION_SCORES.values()):
        generate(private_systemd, f"score{index}", 8400 + index, "--app", PROBE, *options)
    write_single_line_variants(private_systemd)
    private_systemd.daemon_reload()
    yield private_systemd


def write_single_line_variants(box: PrivateSystemd) -> None:
    """lineN@.service: the default worker unit without sandbox line N."""
    base = (box.unit_dir() / "score0@.service").read_text()
    for index, entry in enumerate(sandbox.SANDBOX):
        assert f"\n{entry.line}\n" in base, entry.line
        box.write_unit(f"line{index}@.service", base.replace(f"\n{entry.line}\n", "\n", 1))


def probe(box: PrivateSystemd, name: str, path: str = "/") -> dict[str, object]:
    port = APPS[name][0]
    box.systemctl("start", f"{name}.socket")
    answer: dict[str, object] = json.loads(http_get(box, f"http://127.0.0.1:{port}{path}"))
    return answer


def test_default_worker_scores_at_most_1_5(box: PrivateSystemd) -> None:
    report = box.run("systemd-analyze", "security", "--no-pager", "score0@1.service").stdout
    exposed = [line for line in report.splitlines() if line.startswith("✗")]
    score = parse_score(report)
    print(
        f"\nsystemd-analyze security (systemd {box.systemd_version()}): {score}; still exposed:\n" + "\n".join(exposed)
    )
    assert score is not None and score <= 1.5
    assert score == explain.SCORE_DEFAULT
    assert security_score("score0@1.service", box.run) == score


def test_every_option_scores_what_the_docs_say(box: PrivateSystemd) -> None:
    measured = {
        label: security_score(f"score{index}@1.service", box.run) for index, label in enumerate(explain.OPTION_SCORES)
    }
    print("\n" + "\n".join(f"{label}: {score}" for label, score in measured.items()))
    assert measured == {label: score for label, (_, score) in explain.OPTION_SCORES.items()}


def test_every_sandbox_line_costs_what_the_table_says(box: PrivateSystemd) -> None:
    measured = {
        entry.line: security_score(f"line{index}@1.service", box.run) for index, entry in enumerate(sandbox.SANDBOX)
    }
    print("\n" + "\n".join(f"{line}: {score}" for line, score in measured.items()))
    assert measured == {entry.line: entry.exposure_without for entry in sandbox.SANDBOX}


def test_security_score_is_none_without_a_manager() -> None:
    def no_manager(*argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 1, "", "Failed to connect to bus: No such file or directory")

    assert security_score("myapp@1.service", no_manager) is None


def test_asgi_app_serves_inside_the_sandbox(box: PrivateSystemd) -> None:
    seen = probe(box, "probe")
    assert seen["uid"] == seen["euid"] != 0
    assert seen["capeff"] == "0000000000000000"
    assert seen["loop"] == "uvloop"  # uvloop and httptools need no W+X memory
    assert seen["ctypes_callback"] == "ok 1234"  # libffi closures work under MemoryDenyWriteExecute=
    assert str(seen["write_execute"]).startswith("denied")
    assert seen["write_app_dir"] == "denied Read-only file system"
    assert str(seen["write_tmp"]).startswith("ok /tmp/")
    assert seen["write_state"] == "ok no directory"
    assert seen["other_processes"] == []  # ProtectProc=invisible: not even PID 1
    assert str(seen["meminfo"]).startswith("denied")  # ProcSubset=pid
    user = box.show("probe@1.service", "User", "DynamicUser")
    assert user == {"User": "sockact-probe", "DynamicUser": "yes"}


def test_logs_reach_the_journal_from_inside_the_sandbox(box: PrivateSystemd) -> None:
    probe(box, "probe")
    box.wait_for(lambda: "ready: serving" in box.journal("-u", "probe@1.service", "-o", "cat"), what="ready in journal")
    assert "sandbox probe started" in box.journal("-u", "probe@1.service", "-o", "cat")


def test_allow_jit_lifts_only_memory_deny_write_execute(box: PrivateSystemd) -> None:
    seen = probe(box, "jit")
    assert seen["write_execute"] == "ok mapped"
    assert seen["write_app_dir"] == "denied Read-only file system"


def test_fixed_user_with_a_state_directory_and_a_writable_path(box: PrivateSystemd) -> None:
    seen = probe(box, "fixed")
    assert seen["uid"] == 33
    assert str(seen["write_state"]).startswith("ok /var/lib/fixed-probe/")
    assert str(seen["write_writable"]).startswith("ok /opt/")
    assert seen["write_app_dir"] == "denied Read-only file system"


def test_port_80_with_a_worker_that_is_never_root(box: PrivateSystemd) -> None:
    seen = probe(box, "port80")
    assert seen["uid"] != 0 and seen["capeff"] == "0000000000000000"
    bound = box.show("port80.socket", "Listen")["Listen"]
    assert bound == "[::]:80 (Stream)"


def test_wsgi_app_serves_inside_the_sandbox(box: PrivateSystemd) -> None:
    box.systemctl("start", "wsgi.socket")
    assert http_get(box, "http://127.0.0.1:8304/hello").startswith("wsgi worker 1 uid ")


@pytest.mark.parametrize("name", ["djasgi", "djwsgi"], ids=["asgi", "wsgi"])
def test_django_startproject_serves_inside_the_sandbox(box: PrivateSystemd, name: str) -> None:
    port = APPS[name][0]
    box.systemctl("start", f"{name}.socket")
    welcome = http_get(box, f"http://127.0.0.1:{port}/")
    assert "The install worked successfully!" in welcome
    login = http_get(box, f"http://127.0.0.1:{port}/admin/login/")
    assert "Django administration" in login


def sandbox_lines(text: str) -> list[str]:
    header = "# `sockact generate --explain` says what each line does and how to lift it.\n"
    return text.split(header, 1)[1].splitlines()


@pytest.mark.parametrize(
    "options",
    [(), ("--user", "www-data", "--allow-jit"), ("--chdir", "/home/me/app")],
    ids=["default", "user-jit", "home"],
)
def test_explain_covers_every_sandbox_line_of_the_unit(options: tuple[str, ...]) -> None:
    base = ["generate", "myapp", "--app", "a:app", "--listen", "80", "--systemd-version", "252", *options]
    code, unit = run_cli([*base, "--only", "service"])
    assert code == 0
    code, text = run_cli([*base, "--explain"])
    assert code == 0
    explained = [line.split("  (without:")[0] for line in text.splitlines() if "=" in line and not line.startswith(" ")]
    user = next(line for line in unit.splitlines() if line.startswith("User="))
    assert explained == [user, *sandbox_lines(unit)]
    assert text.count("(without: ") == len(sandbox_lines(unit)) and "Trade-off:" in text


def test_explain_without_sandbox_says_so() -> None:
    code, text = run_cli(["generate", "myapp", "--app", "a:app", "--listen", "80", "--no-harden", "--explain"])
    assert code == 0 and "--no-harden" in text and str(explain.SCORE_NO_HARDEN) in text


def test_root_is_refused_unless_the_sandbox_is_off() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli_main(["generate", "myapp", "--app", "a:app", "--listen", "80", "--user", "root"]) == 2
    assert len(err.getvalue().splitlines()) == 1 and "never need root" in err.getvalue()
    code, unit = run_cli(
        ["generate", "myapp", "--app", "a:app", "--listen", "80", "--user", "root", "--no-harden", "--only", "service"]
    )
    assert code == 0 and "User=root\n" in unit and "DynamicUser" not in unit


def test_a_dynamic_user_never_takes_the_name_of_an_account() -> None:
    # systemd would run a DynamicUser= service named "root" as root: the generated User= is always prefixed.
    code, unit = run_cli(["generate", "root", "--app", "a:app", "--listen", "80", "--only", "service"])
    assert code == 0 and "User=sockact-root\n" in unit and "DynamicUser=yes\n" in unit
    code, unit = run_cli(["generate", "My.App:x", "--app", "a:app", "--listen", "80", "--only", "service"])
    assert re.search(r"^User=sockact-[0-9a-f]{16}$", unit, re.MULTILINE)


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(argv)
    return code, out.getvalue()
