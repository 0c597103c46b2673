"""The preflight's checks that need root but no systemd: an interpreter reached through /root, and --writable
paths owned by root or chowned to another user (the rest of the preflight: tests/unit/test_preflight_local.py)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from sockact.errors import PreflightFailed
from sockact.generator import spec
from sockact.ops.preflight import check_interpreter, check_writable


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
