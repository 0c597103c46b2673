"""`sockact install`'s preflight and `install --now` on a real (private) systemd: a broken first deploy is
refused in one line with nothing written or enabled, and a good one is proven ready before install returns."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ops_commands import HELLO, NOBODY, PY, UNIT_DIR, sockact_in

from sockact.box import PrivateSystemd


def attempt(box: PrivateSystemd, name: str, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """install --enable --now with the given options (--app last wins over the default hello app)."""
    return sockact_in(
        box,
        "install",
        name,
        "--app",
        HELLO,
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--enable",
        "--now",
        *extra,
        check=False,
    )


def assert_nothing_left(box: PrivateSystemd, name: str, port: int | None) -> None:
    """No unit file, no enablement symlink, no loaded unit, nothing listening on the port (if given)."""
    written = [
        unit for unit in (f"{name}.socket", f"{name}@.service", f"{name}.target") if (box.unit_dir() / unit).exists()
    ]
    assert written == [], written
    assert not (box.unit_dir() / "sockets.target.wants" / f"{name}.socket").exists()
    enabled = box.systemctl("is-enabled", f"{name}.socket", check=False)
    assert enabled.returncode != 0 and enabled.stdout.strip() in ("", "not-found"), enabled
    loaded = box.systemctl("list-units", "--all", "--no-legend", f"{name}*", check=False).stdout
    assert loaded.strip() == "", loaded
    if port is not None:
        assert f":{port} " not in box.run("ss", "-ltnH").stdout
    assert not box.path(f"/run/{name}").exists()  # the workers' RuntimeDirectory=


def refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit status 1 and exactly this one line on stderr, no traceback."""
    print(f"\n$ sockact install ... -> exit {result.returncode}\n{result.stderr}", end="")
    assert result.returncode == 1, result
    assert result.stderr == f"sockact: {line}\n", result.stderr


@pytest.fixture
def home_interpreter(private_systemd: PrivateSystemd) -> Iterator[tuple[str, str]]:
    """(venv python, the copied interpreter under /root it symlinks to): a pyenv-style venv."""
    home = Path(tempfile.mkdtemp(prefix=".sockact-pyenv-", dir="/root"))
    try:
        version = sysconfig.get_python_version()
        base = home / "bin" / f"python{version}"
        base.parent.mkdir()
        shutil.copy2(Path(sys.base_prefix) / "bin" / f"python{version}", base)
        (home / "lib").mkdir()
        (home / "lib" / f"python{version}").symlink_to(Path(sys.base_prefix) / "lib" / f"python{version}")
        venv = "/run/sockact-pyenvish"  # the box's own /run: gone with the box
        private_systemd.run(str(base), "-m", "venv", "--without-pip", venv)
        yield f"{venv}/bin/python3", str(base)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_venv_whose_python_lives_under_root_is_refused(
    private_systemd: PrivateSystemd, home_interpreter: tuple[str, str]
) -> None:
    box = private_systemd
    python, base = home_interpreter
    # The premise, on this systemd: under ProtectHome=yes the venv's python cannot even be executed.
    direct = box.run(
        "systemd-run", "--wait", "--pipe", "--quiet", "-p", "ProtectHome=yes", python, "-c", "pass", check=False
    )
    assert direct.returncode == 203, direct
    result = attempt(box, "pyenvish", 8600, "--python", python)
    refused(
        result,
        f"the interpreter {python} resolves to {base} under /root, which the workers cannot reach "
        "(ProtectHome=); make the venv from /usr/bin/python3 (python3 -m venv …) or pass --python with "
        "an interpreter outside /home, /root and /run/user",
    )
    assert_nothing_left(box, "pyenvish", 8600)


def test_a_typo_in_the_module_is_refused_with_the_import_error(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    result = attempt(box, "typo", 8601, "--app", "sockact.examples.helo:app")
    refused(
        result,
        "cannot import sockact.examples.helo: ModuleNotFoundError: No module named "
        f"'sockact.examples.helo'; fix the app or --app/--chdir (checked with {PY} as the workers run it)",
    )
    assert_nothing_left(box, "typo", 8601)


def test_a_missing_chdir_is_refused(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    result = attempt(box, "nodir", 8602, "--chdir", "/srv/sockact-no-such-dir")
    refused(
        result,
        "--chdir /srv/sockact-no-such-dir does not exist; create it or give the directory that holds the app's code",
    )
    assert_nothing_left(box, "nodir", 8602)


BUSY = (
    "import os, socket, sys\ns = socket.socket()\ns.bind(('127.0.0.1', 8603))\ns.listen()\n"
    "print(os.getpid(), flush=True)\nsys.stdin.read()\n"
)


def test_a_busy_port_names_its_owner(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    holder = box.popen("python3", "-c", BUSY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        pid = holder.stdout.readline().strip()
        result = attempt(box, "busy", 8603)
        refused(result, f"port 8603 is in use by python3, pid {pid}; stop it or pick another --listen")
        assert_nothing_left(box, "busy", None)  # the port is the holder's
        # The port given as a bare number ([::]:8603, IPv4 mapped in) collides the same way.
        bare = sockact_in(
            box,
            "install",
            "busy",
            "--app",
            HELLO,
            "--listen",
            "8603",
            "--python",
            PY,
            "--unit-dir",
            UNIT_DIR,
            "--dry-run",
            check=False,
        )
        refused(bare, f"port 8603 is in use by python3, pid {pid}; stop it or pick another --listen")
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_an_app_whose_startup_raises_is_rolled_back(private_systemd: PrivateSystemd, shared_apps: Path) -> None:
    box = private_systemd
    result = attempt(box, "failing", 8604, "--app", "failstart:app", "--chdir", str(shared_apps))
    refused(
        result,
        f"failing did not start: failing@1.service: application startup failed: RuntimeError: database "
        f"unreachable (at {shared_apps}/failstart.py:12); rolled back: the units were stopped and "
        "removed, nothing is installed or enabled",
    )
    assert "checked --app failstart:app: imports (as the workers' user under their sandbox)" in result.stdout
    assert f"removed {UNIT_DIR}/failing.socket" in result.stdout
    assert_nothing_left(box, "failing", 8604)


def test_an_upgrade_that_does_not_start_gets_its_previous_units_back(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    first = sockact_in(
        box,
        "install",
        "upgr",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8605",
        "--workers",
        "1",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
    )
    before = (box.unit_dir() / "upgr@.service").read_text()
    assert "wrote" in first.stdout
    result = attempt(box, "upgr", 8605, "--app", "failstart:app", "--chdir", str(shared_apps))
    refused(
        result,
        f"upgr did not start: upgr@1.service: application startup failed: RuntimeError: database "
        f"unreachable (at {shared_apps}/failstart.py:12); this was an upgrade: the previous units of upgr "
        "are back in place (its enablement is unchanged), its workers are stopped "
        "and its socket is stopped",
    )
    assert (box.unit_dir() / "upgr@.service").read_text() == before
    assert box.show("upgr@1.service", "ActiveState", "NeedDaemonReload") == {
        "ActiveState": "inactive",
        "NeedDaemonReload": "no",
    }
    assert box.systemctl("is-enabled", "upgr.socket", check=False).stdout.strip() == "disabled"
    sockact_in(box, "uninstall", "upgr")


def test_dry_run_then_install_now_reports_ready(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    began = time.monotonic()
    dry = sockact_in(
        box,
        "install",
        "good",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8606",
        "--workers",
        "2",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--enable",
        "--now",
        "--dry-run",
    )
    print(
        f"\n$ sockact install good ... --dry-run  ({time.monotonic() - began:.2f} s with the CLI's own start)\n"
        f"{dry.stdout}",
        end="",
    )
    assert dry.stdout.splitlines() == [
        f"checked --python {PY}: executable ({Path(PY).resolve()})",
        "checked --listen 127.0.0.1:8606: free",
        "checked --app sockact.examples.hello:app: imports (as the workers' user under their sandbox)",
        f"would write {UNIT_DIR}/good.socket",
        f"would write {UNIT_DIR}/good@.service",
        f"would write {UNIT_DIR}/good.target",
        "would start good.socket and 2 workers and wait until they are ready",
        "would enable good.socket until the next reboot",
        "dry run: every check passed; nothing was written (run it again without --dry-run to install)",
    ]
    assert_nothing_left(box, "good", 8606)
    # Without root: the same checks, the import as a plain subprocess, and it says so.
    unprivileged = sockact_in(
        box,
        "install",
        "good",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8606",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--dry-run",
        as_user=NOBODY,
    )
    assert (
        "checked --app sockact.examples.hello:app: imports (as a plain subprocess: without root and the system "
        "bus there is no sandbox to check it in)"
    ) in unprivileged.stdout.splitlines()
    assert_nothing_left(box, "good", 8606)

    done = sockact_in(
        box,
        "install",
        "good",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8606",
        "--workers",
        "2",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--enable",
        "--now",
    )
    print(f"\n$ sockact install good ... --enable --now\n{done.stdout}", end="")
    ready = next(line for line in done.stdout.splitlines() if line.startswith("started good: "))
    assert ready.startswith("started good: listening on 127.0.0.1:8606, 2 workers ready in ")
    assert [box.show(f"good@{i}.service", "ActiveState")["ActiveState"] for i in (1, 2)] == ["active"] * 2
    assert box.systemctl("is-enabled", "good.socket", check=False).stdout.strip() == "enabled-runtime"
    assert box.run("curl", "-sS", "--fail", "http://127.0.0.1:8606/").stdout.startswith("worker ")
    # Installing again over the running app: its own socket holds the port, which is no conflict.
    again = sockact_in(
        box,
        "install",
        "good",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8606",
        "--workers",
        "2",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--dry-run",
    )
    assert "checked --listen 127.0.0.1:8606: held by good.socket already" in again.stdout
    sockact_in(box, "uninstall", "good")


def test_what_only_the_sandboxed_check_sees(private_systemd: PrivateSystemd) -> None:
    """No path rule catches these; running the interpreter as the workers run it does."""
    box = private_systemd
    bare = "/run/sockact-bare"  # a venv without sockact in it
    box.run("/usr/bin/python3", "-m", "venv", "--without-pip", bare)
    result = attempt(box, "bare", 8607, "--python", f"{bare}/bin/python3")
    refused(
        result,
        f"{bare}/bin/python3 cannot import sockact (ModuleNotFoundError: No module named 'sockact'); "
        f"install sockact into that venv ({bare}/bin/python3 -m pip install with the sockact wheel or "
        "checkout) or pass --python with one that has it",
    )
    assert_nothing_left(box, "bare", 8607)

    closed = Path(tempfile.mkdtemp(prefix="sockact-closed-", dir="/opt"))  # mode 700: the dynamic user cannot pass
    try:
        (closed / "python3").symlink_to(Path(PY).resolve())
        result = attempt(box, "closed", 8608, "--python", f"{closed}/python3")
        print(f"\n$ sockact install closed ... -> exit {result.returncode}\n{result.stderr}", end="")
        assert result.returncode == 1
        note, line = result.stderr.splitlines()  # spec_from's note on the closed directory, then the refusal
        assert note.startswith(f"sockact: note: {closed} is closed to other users")
        assert line == (
            f"sockact: the workers' user cannot execute {closed}/python3 (systemd exit 203): every "
            f"directory on its way, and on the way to its real file {Path(PY).resolve()}, must be open "
            "to others (mode 755), or pass --user ACCOUNT"
        )
        assert_nothing_left(box, "closed", 8608)
    finally:
        shutil.rmtree(closed)


def test_a_command_that_exits_at_once_is_rolled_back(private_systemd: PrivateSystemd) -> None:
    """--exec: no import to check, so --now is the proof; systemd restarting the worker is the failure seen."""
    box = private_systemd
    result = sockact_in(
        box,
        "install",
        "quits",
        "--exec",
        "/bin/false",
        "--listen",
        "127.0.0.1:8609",
        "--workers",
        "1",
        "--unit-dir",
        UNIT_DIR,
        "--enable",
        "--now",
        check=False,
    )
    refused(
        result,
        "quits did not start: quits@1.service: exited with status 1; rolled back: the units were "
        "stopped and removed, nothing is installed or enabled",
    )
    assert_nothing_left(box, "quits", 8609)

    closed = Path(tempfile.mkdtemp(prefix="sockact-closed-", dir="/opt"))  # mode 700: the dynamic user cannot pass
    try:
        (closed / "serve").symlink_to("/bin/true")
        result = sockact_in(
            box,
            "install",
            "noexec",
            "--exec",
            f"{closed}/serve",
            "--listen",
            "127.0.0.1:8609",
            "--workers",
            "1",
            "--unit-dir",
            UNIT_DIR,
            "--now",
            check=False,
        )
        print(f"\n$ sockact install noexec ... -> exit {result.returncode}\n{result.stderr}", end="")
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == (
            f"sockact: the workers' user cannot execute {closed}/serve under their sandbox (ProtectHome=, directory "
            "modes): put it outside /home and /root with every directory on its way open to others (mode 755), or "
            "pass --user ACCOUNT"
        )
        assert_nothing_left(box, "noexec", 8609)
        # A script the workers can read whose #! interpreter they cannot reach.
        script = Path(tempfile.mkdtemp(prefix="sockact-open-", dir="/opt"))
        script.chmod(0o755)
        (script / "serve").write_text(f"#!{closed}/serve\n")
        (script / "serve").chmod(0o755)
        result = sockact_in(
            box,
            "install",
            "noexec",
            "--exec",
            f"{script}/serve",
            "--listen",
            "127.0.0.1:8609",
            "--workers",
            "1",
            "--unit-dir",
            UNIT_DIR,
            "--dry-run",
            check=False,
        )
        print(f"$ sockact install noexec ... -> exit {result.returncode}\n{result.stderr}", end="")
        refused(
            result,
            f"the workers' user cannot execute {closed}/serve (the #! line of {script}/serve) under "
            "their sandbox (ProtectHome=, directory modes): put it outside /home and /root with every "
            "directory on its way open to others (mode 755), or pass --user ACCOUNT",
        )
        assert_nothing_left(box, "noexec", 8609)
        shutil.rmtree(script)
    finally:
        shutil.rmtree(closed)
    good = sockact_in(
        box,
        "install",
        "okexec",
        "--exec",
        "/bin/true",
        "--listen",
        "127.0.0.1:8609",
        "--unit-dir",
        UNIT_DIR,
        "--dry-run",
    )
    assert "checked --exec: the program /bin/true executable by the workers' user under their sandbox" in good.stdout


def on_unix(box: PrivateSystemd, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return sockact_in(
        box,
        "install",
        "busyunix",
        "--app",
        HELLO,
        "--listen",
        path,
        "--workers",
        "1",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
        "--enable",
        "--now",
        *extra,
        check=False,
    )


def test_a_unix_socket_path_another_server_listens_on_is_refused(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    path = "/run/sockact-busy.sock"
    holder = box.popen(
        "python3",
        "-c",
        "import os, socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({path!r})\ns.listen()\nprint(os.getpid(), flush=True)\nsys.stdin.read()\n",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        pid = holder.stdout.readline().strip()
        result = on_unix(box, path)
        refused(result, f"the unix socket {path} is in use by python3, pid {pid}; stop it or pick another --listen")
        assert_nothing_left(box, "busyunix", None)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # The holder is gone, its socket file stays: stale, and systemd replaces it.
    stale = on_unix(box, path, "--dry-run")
    assert f"checked --listen {path}: a stale socket file nothing listens on (systemd replaces it)" in stale.stdout
    box.run("sh", "-c", f"rm -f {path} && echo data > {path}")
    result = on_unix(box, path, "--dry-run")
    refused(result, f"--listen {path} exists and is not a socket; remove it or pick another path")
    box.run("rm", "-f", path)
    assert_nothing_left(box, "noexec", 8609)


def test_installing_over_an_app_that_cannot_start_says_so_not_that_it_runs(
    private_systemd: PrivateSystemd, shared_apps: Path
) -> None:
    box = private_systemd
    sockact_in(
        box,
        "install",
        "mend",
        "--app",
        "failstart:app",
        "--chdir",
        str(shared_apps),
        "--listen",
        "127.0.0.1:8610",
        "--workers",
        "1",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
    )
    box.systemctl("start", "mend.socket")
    box.systemctl("start", "--no-block", "mend.target")
    box.wait_for(
        lambda: "database unreachable" in box.show("mend@1.service", "StatusText")["StatusText"],
        timeout=30,
        interval=0.2,
        what="mend@1 to wait to retry its app",
    )
    fixed = (
        "install",
        "mend",
        "--app",
        HELLO,
        "--listen",
        "127.0.0.1:8610",
        "--workers",
        "1",
        "--python",
        PY,
        "--unit-dir",
        UNIT_DIR,
    )
    later = sockact_in(box, *fixed)
    print(f"\n$ sockact install mend ... (over a worker waiting to retry)\n{later.stdout}", end="")
    assert later.stdout.splitlines()[-1] == (
        "mend's workers could not start the app (1 waiting to retry): run `sudo sockact start mend` to try the new "
        "units now and wait until they are ready"
    )
    assert "is running" not in later.stdout
    now = sockact_in(box, *fixed, "--now")
    print(f"$ sockact install mend ... --now\n{now.stdout}", end="")
    assert now.stdout.splitlines()[-1].startswith("started mend: listening on 127.0.0.1:8610, 1 workers ready in ")
    assert box.run("curl", "-sS", "--fail", "http://127.0.0.1:8610/").stdout.startswith("worker ")
    again = sockact_in(box, *fixed)
    assert again.stdout.splitlines()[-1] == (
        "mend is running (1 workers on the previous units): run `sudo sockact reload mend` to restart them on the "
        "new ones, and `sudo sockact scale mend 1` if the worker count changed"
    )
    sockact_in(box, "uninstall", "mend")


def test_a_writable_path_the_dynamic_user_cannot_write_is_refused(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    uploads = Path(tempfile.mkdtemp(prefix="sockact-uploads-", dir="/opt"))  # root's, as a deploy makes it
    try:
        uploads.chmod(0o755)
        result = attempt(box, "uploads", 8611, "--writable", str(uploads))
        refused(
            result,
            f"--writable {uploads} belongs to root (drwxr-xr-x): the workers' dynamic user cannot write "
            "it; keep the app's data in --state-dir NAME (systemd makes /var/lib/NAME and gives it to the "
            f"workers), or run them as a user of yours (--user web) and chown that user {uploads}",
        )
        assert_nothing_left(box, "uploads", 8611)
    finally:
        shutil.rmtree(uploads)
