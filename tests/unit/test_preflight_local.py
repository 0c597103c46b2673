"""The preflight's pieces that need neither systemd nor root: symlink chains, the paths, the port probe, the
reasons read from a worker's STATUS= line, and one-line import errors (the root-only checks:
tests/systemd/test_preflight_root.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from sockact.contract import app_reason
from sockact.errors import PreflightFailed, RuntimeFailure
from sockact.generator import spec
from sockact.ops.preflight import bind_address, check_paths, link_chain, port_free
from sockact.ops.ready import Before, why_not
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
