"""The preflight's pieces that need no systemd: symlink chains, ProtectHome= reachability, the paths, the
port probe, the reasons read from a worker's STATUS= line, and one-line import errors."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from sockact.errors import PreflightFailed, RuntimeFailure
from sockact.generator import spec
from sockact.ops.preflight import bind_address, check_interpreter, check_paths, check_writable, link_chain, port_free
from sockact.ops.ready import Before, app_reason, why_not
from sockact.runtime.main import load_app


def build(python: str, *extra: tuple[str, str]) -> spec.UnitSpec:
    options = dict(extra)
    return spec.build(
        unit_name="app",
        listen=["127.0.0.1:8000"],
        python_path=python,
        app_ref="m:app",
        chdir=options.get("chdir"),
        env_file=options.get("env_file"),
        harden=options.get("harden") != "no",
    )


def test_link_chain_follows_every_hop(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("")
    (tmp_path / "mid").symlink_to(tmp_path / "real")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "python3").symlink_to("../mid")
    assert link_chain(str(tmp_path / "venv" / "python3")) == [
        str(tmp_path / "venv" / "python3"),
        str(tmp_path / "mid"),
        str(tmp_path / "real"),
    ]


def test_an_interpreter_reached_through_a_home_directory_is_refused(tmp_path: Path) -> None:
    """A hop under /root is enough, even when the real file is outside it: the kernel walks every hop."""
    if not os.access("/root", os.W_OK):
        pytest.skip("needs a writable /root")
    real = Path(sys.executable).resolve()
    home = Path(tempfile.mkdtemp(prefix=".sockact-local-", dir="/root"))
    try:
        (home / "python3").symlink_to(real)
        venv = tmp_path / "python3"
        venv.symlink_to(home / "python3")
        with pytest.raises(PreflightFailed) as refused:
            check_interpreter(build(str(venv)))
        assert str(refused.value) == (
            f"the interpreter {venv} resolves to {home}/python3 under /root, which the workers cannot reach "
            "(ProtectHome=); make the venv from /usr/bin/python3 (python3 -m venv …) or pass --python with an "
            "interpreter outside /home, /root and /run/user"
        )
        # Without the sandbox (--no-harden) nothing is hidden; with the venv itself under /root the unit
        # gets ProtectHome=read-only, and only the real check (systemd-run) can judge it.
        assert check_interpreter(build(str(venv), ("harden", "no"))) == f"--python {venv}: executable ({real})"
        assert check_interpreter(build(str(home / "python3"))) == f"--python {home}/python3: executable ({real})"
    finally:
        shutil.rmtree(home)
    link = tmp_path / "ok"
    link.symlink_to(real)
    assert check_interpreter(build(str(link))) == f"--python {link}: executable ({real})"
    with pytest.raises(PreflightFailed, match=f"^--python {tmp_path}/gone does not exist; give the path"):
        check_interpreter(build(str(tmp_path / "gone")))
    (tmp_path / "dangling").symlink_to(tmp_path / "removed-base")
    with pytest.raises(PreflightFailed, match="which does not exist .* make the venv again"):
        check_interpreter(build(str(tmp_path / "dangling")))


def test_missing_chdir_and_env_file(tmp_path: Path) -> None:
    with pytest.raises(PreflightFailed, match="^--chdir /srv/nowhere-at-all does not exist; create it"):
        check_paths(build(sys.executable, ("chdir", "/srv/nowhere-at-all")))
    (tmp_path / "file").write_text("")
    with pytest.raises(PreflightFailed, match="is not a directory"):
        check_paths(build(sys.executable, ("chdir", str(tmp_path / "file"))))
    with pytest.raises(PreflightFailed, match="^--env-file .* does not exist or is not a file"):
        check_paths(build(sys.executable, ("env_file", str(tmp_path / "absent.env"))))
    assert check_paths(build(sys.executable, ("chdir", str(tmp_path)), ("env_file", str(tmp_path / "file")))) == [
        f"--chdir {tmp_path}: a directory",
        f"--env-file {tmp_path / 'file'}: readable",
    ]


def test_writable_paths_the_workers_cannot_write_are_refused(tmp_path: Path) -> None:
    # ReadWritePaths= lifts the read-only mount, not the permissions: a root-owned 0755 directory stays
    # closed to the dynamic user (issue: a Flask app writing next to its code got "Permission denied").
    closed, open_to_all, missing = tmp_path / "closed", tmp_path / "open", tmp_path / "missing"
    closed.mkdir(mode=0o755)
    open_to_all.mkdir()
    open_to_all.chmod(0o1777)
    owner = build(sys.executable)
    with pytest.raises(
        PreflightFailed,
        match=r"^--writable .*/closed belongs to root \(drwxr-xr-x\): the workers' "
        r"dynamic user cannot write it; keep the app's data in --state-dir",
    ):
        check_writable(owner, str(closed))
    assert check_writable(owner, str(open_to_all)) == f"--writable {open_to_all}: writable by every user (drwxrwxrwt)"
    with pytest.raises(PreflightFailed, match="does not exist; create it first"):
        check_writable(owner, str(missing))
    named = spec.build(
        unit_name="app", listen=["127.0.0.1:8000"], python_path=sys.executable, app_ref="m:app", run_as="nobody"
    )
    with pytest.raises(PreflightFailed, match=r"user nobody cannot write it; chown nobody"):
        check_writable(named, str(closed))
    os.chown(closed, 65534, -1)  # nobody
    assert check_writable(named, str(closed)) == f"--writable {closed}: writable by nobody"
    unsandboxed = build(sys.executable, ("harden", "no"))
    assert check_writable(unsandboxed, str(closed)).endswith("(the workers run as root)")


def test_port_probe_sees_a_listener_and_binds_like_systemd() -> None:
    assert bind_address(spec.listener("8000")) == (socket.AF_INET6, "::", 8000)
    assert bind_address(spec.listener("[::1]:8000")) == (socket.AF_INET6, "::1", 8000)
    assert bind_address(spec.listener("127.0.0.1:8000")) == (socket.AF_INET, "127.0.0.1", 8000)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_free(spec.listener(f"127.0.0.1:{port}")) is False
        assert port_free(spec.listener(str(port))) is False  # [::] with IPv4 mapped in covers 127.0.0.1
    assert port_free(spec.listener(f"127.0.0.1:{port}")) is True


def test_the_reason_of_a_worker_that_cannot_start() -> None:
    status = (
        "cannot start: application startup failed: RuntimeError: database unreachable (at /srv/a.py:3); "
        "retrying in 2 s (attempt 2)"
    )
    assert app_reason(status) == "application startup failed: RuntimeError: database unreachable (at /srv/a.py:3)"
    assert app_reason("cannot start: cannot start: OSError: x; retrying in 1 s (attempt 1)") == "OSError: x"
    fresh = Before({"a@1.service": 0}, {})
    activating = {
        "ActiveState": "activating",
        "SubState": "start",
        "NRestarts": "0",
        "StatusText": "",
        "InvocationID": "b",
    }
    assert why_not("a@1.service", activating, fresh) is None
    assert why_not("a@1.service", {**activating, "StatusText": status}, fresh) == app_reason(status)
    assert why_not("a@1.service", {"ActiveState": "active", "NRestarts": "3"}, fresh) is None
    # The STATUS= line of the invocation that was retrying before the start is not this start's outcome.
    stale = Before({"a@1.service": 0}, {"a@1.service": "b"})
    assert why_not("a@1.service", {**activating, "StatusText": status}, stale) is None
    assert why_not("a@1.service", {**activating, "StatusText": status, "InvocationID": "c"}, stale) is not None


def test_an_import_error_names_the_app_line_not_importlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeFailure) as missing:
        load_app("no_such_module_here:app")
    assert str(missing.value) == (
        "cannot import no_such_module_here: ModuleNotFoundError: No module named 'no_such_module_here'"
    )
    (tmp_path / "needs_dep.py").write_text("x = 1\nimport no_such_dependency\n")
    with pytest.raises(RuntimeFailure) as dep:
        load_app("needs_dep:app")
    assert str(dep.value) == (
        "cannot import needs_dep: ModuleNotFoundError: No module named 'no_such_dependency' "
        f"(at {tmp_path}/needs_dep.py:2)"
    )
