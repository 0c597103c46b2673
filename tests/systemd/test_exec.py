"""`sockact exec`: reading the worker unit into systemd-run's properties, then one-off commands under a real
(private) systemd that run as the workers do: same dynamic UID, environment, directory, state directory and
sandbox; exit status, stdin, a terminal and bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO
from test_ops_commands import UNIT_DIR, sockact_in

from sockact.box import PrivateSystemd
from sockact.errors import UsageError
from sockact.generator import spec
from sockact.generator.render import render
from sockact.ops import oneoff

VENV_BIN = os.path.dirname(sys.executable)


def worker_unit(**options: Any) -> str:
    built = spec.build(
        unit_name="web",
        listen=["8000"],
        python_path=sys.executable,
        app_ref="proj.wsgi:app",
        systemd_version=252,
        **options,
    )
    return next(unit.text for unit in render(built) if unit.kind == "service")


# --- the unit file, read without systemd ------------------------------------------------------------


def test_properties_are_the_workers_minus_what_only_a_server_needs() -> None:
    text = worker_unit(chdir="/srv/proj", env=['GREETING=50% off "now"'], state_dir="proj")
    settings = list(oneoff.service_settings(text, "web@.service"))
    props = oneoff.one_off_properties(settings, "web", "/opt/venv/bin:/usr/bin")
    keys = [prop.split("=", 1)[0] for prop in props]
    assert not set(keys) & {
        "Type",
        "Sockets",
        "NonBlocking",
        "ExecStart",
        "Restart",
        "WatchdogSec",
        "KillMode",
        "TimeoutStopSec",
        "NotifyAccess",
    }
    for expected in (
        "DynamicUser=yes",
        "User=sockact-web",
        "WorkingDirectory=/srv/proj",
        "StateDirectory=proj",
        "ProtectSystem=strict",
        "SystemCallFilter=~@privileged @resources",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "LimitNOFILE=524288",
        "UMask=0077",
        "SyslogIdentifier=web@exec",
        "Environment=SOCKACT_APP=web SOCKACT_WORKER=exec",
        'Environment="GREETING=50% off \\"now\\""',  # %% unescaped; quotes kept for systemd-run
        "RuntimeDirectory=web",
        "Environment=PATH=/opt/venv/bin:/usr/bin",
    ):
        assert expected in props
    # whatever the unit says, the one-off never removes the directory the running workers share
    drop_in = oneoff.Setting("RuntimeDirectoryPreserve", "no", "50-local.conf")
    props = oneoff.one_off_properties([*settings, drop_in], "web", None)
    preserve = [prop for prop in props if prop.startswith("RuntimeDirectoryPreserve=")]
    assert preserve[-1] == "RuntimeDirectoryPreserve=yes"


def test_drop_in_syntax_comments_continuations_and_sections() -> None:
    text = (
        "[Unit]\nDescription=x\n[Service]\n# a comment\n; another\nEnvironment=A=1 \\\n  B=2\nUser = bob\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    settings = list(oneoff.service_settings(text, "d.conf"))
    assert [(s.key, s.value) for s in settings] == [("Environment", "A=1 B=2"), ("User", "bob")]


def test_specifiers_are_expanded_for_the_exec_instance_only_where_systemd_expands_them() -> None:
    def value(key: str, raw: str) -> str:
        return oneoff.expand(oneoff.Setting(key, raw, "f"), "web")

    assert value("Environment", "N=%n I=%i P=%p %%") == "N=web@exec.service I=exec P=web %"
    assert value("ReadWritePaths", "%S/web %t/web") == "/var/lib/web /run/web"
    assert value("MemoryMax", "50%") == "50%"  # systemd takes it as written
    with pytest.raises(UsageError, match="specifier %h"):
        value("WorkingDirectory", "%h/app")


def test_path_puts_the_interpreter_directory_first_unless_the_unit_sets_path() -> None:
    venv = [oneoff.Setting("ExecStart", "/srv/venv/bin/python3 -m sockact run a:app", "f")]
    assert oneoff.command_path(venv, "web", "/usr/bin:/bin") == ("/srv/venv/bin:/usr/bin:/bin",) * 2
    system = [oneoff.Setting("ExecStart", "/usr/bin/python3 -m sockact run a:app", "f")]
    assert oneoff.command_path(system, "web", "/usr/bin:/bin") == ("/usr/bin:/bin", "/usr/bin:/bin")
    own = [*venv, oneoff.Setting("Environment", '"PATH=/opt/x:/usr/bin" A=1', "f")]
    assert oneoff.command_path(own, "web", "/usr/bin:/bin") == ("/opt/x:/usr/bin", None)


def test_the_command_is_looked_up_in_the_workers_path_not_the_callers(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        tool = directory / "tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    (first / "plain").write_text("not executable")
    path = f"{first}:{second}"
    assert oneoff.resolve_command(["tool", "-x"], path, "/") == [str(first / "tool"), "-x"]
    assert oneoff.resolve_command(["./second/tool"], path, str(tmp_path)) == [str(second / "tool")]
    with pytest.raises(UsageError, match="'plain' is not a command in the workers' PATH"):
        oneoff.resolve_command(["plain"], path, "/")
    with pytest.raises(UsageError, match="no executable file"):
        oneoff.resolve_command(["./missing"], path, str(tmp_path))


def test_dollars_reach_the_command_as_typed() -> None:
    argv = oneoff.systemd_run_argv("web", "web-exec-1", ["User=x"], ["/bin/echo", "$HOME", "${X}"], "--pipe")
    assert argv[-4:] == ["--", "/bin/echo", "$$HOME", "$${X}"]
    assert "--pipe" in argv and "--wait" in argv and "--collect" in argv and "--property=User=x" in argv


# --- under a real systemd ------------------------------------------------------------------------------

NAME, PORT, STATE = "execapp", 8351, "execapp-state"
TRICKY = 'TRICKY=50% "quoted" $NOT_A_VARIABLE \\ %i'  # each character some layer could take for syntax
PROBE = textwrap.dedent("""
    import json, os, sqlite3, sys
    path = os.path.join(os.environ["STATE_DIRECTORY"], "db.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (note TEXT)")
        notes = [row[0] for row in db.execute("SELECT note FROM notes ORDER BY rowid")]
        db.execute("INSERT INTO notes VALUES ('exec')")
    try:
        open("written-by-exec", "w")
        cwd_write = "ok"
    except OSError as exc:
        cwd_write = exc.strerror
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))  # NoNewPrivs, Seccomp, CapEff
    print(json.dumps({
        "uid": os.getuid(), "cwd": os.getcwd(), "notes": notes, "executable": sys.executable,
        "env": {key: os.environ.get(key) for key in ("EXEC_PROBE", "TRICKY", "SOCKACT_APP", "SOCKACT_WORKER", "PATH")},
        "db_owner": os.stat(path).st_uid, "db_mode": oct(os.stat(path).st_mode & 0o777), "cwd_write": cwd_write,
        "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
        "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
        "pid1_visible": os.path.exists("/proc/1/status"),
    }))
""")
PTY = textwrap.dedent("""
    import os, pty, sys
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "sockact", *sys.argv[1:]])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        out += chunk
    print(repr(out.decode()), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
""")


def remove_state(state: str = STATE) -> None:
    """The box's /var is the host's: start from no state directory and leave none behind."""
    for leftover in (Path("/var/lib") / state, Path("/var/lib/private") / state):
        if leftover.is_symlink():
            leftover.unlink()
        elif leftover.exists():
            shutil.rmtree(leftover)


@pytest.fixture(scope="module")
def box(private_systemd: PrivateSystemd, shared_apps: Path) -> Iterator[PrivateSystemd]:
    """execapp: a WSGI app with a dynamic user and a state directory, its socket listening, no worker yet."""
    remove_state()
    sockact_in(
        private_systemd,
        "install",
        NAME,
        "--app",
        "state_db:application",
        "--listen",
        f"127.0.0.1:{PORT}",
        "--workers",
        "1",
        "--python",
        sys.executable,
        "--chdir",
        str(shared_apps),
        "--state-dir",
        STATE,
        "--env",
        "EXEC_PROBE=seen by exec",
        "--env",
        TRICKY,
        "--unit-dir",
        UNIT_DIR,
        "--now",
    )
    try:
        yield private_systemd
    finally:
        remove_state()


def exec_probe(box: PrivateSystemd) -> dict[str, object]:
    result = sockact_in(box, "exec", NAME, "--", "python3", "-c", PROBE, check=False)
    assert result.returncode == 0, result.stderr
    seen: dict[str, object] = json.loads(result.stdout)
    return seen


def get(box: PrivateSystemd) -> dict[str, object]:
    out = box.run("curl", "-sS", "--fail", "--max-time", "20", f"http://127.0.0.1:{PORT}/", timeout=30).stdout
    answer: dict[str, object] = json.loads(out)
    return answer


def test_exec_runs_as_the_workers_and_its_database_is_theirs(box: PrivateSystemd, shared_apps: Path) -> None:
    # Before any worker ran (the first deploy): the command makes the database, as `migrate` would.
    first = exec_probe(box)
    assert first["notes"] == [] and first["uid"] != 0
    assert first["db_owner"] == first["uid"] and first["db_mode"] == "0o600"  # UMask=0077, as the workers'
    worker = get(box)  # wakes the worker, which reads and writes that file
    assert worker == {"notes": ["exec"], "uid": worker["uid"], "gid": worker["gid"], "cwd": str(shared_apps)}
    # While the worker runs: the very same dynamic UID, and the worker's row is there.
    again = exec_probe(box)
    print(f"\nworker uid {worker['uid']}; exec uid {first['uid']} before the worker ran, {again['uid']} beside it")
    assert again["uid"] == worker["uid"] != 0
    assert again["notes"] == ["exec", "worker"]
    assert get(box)["notes"] == ["exec", "worker", "exec"]
    env = again["env"]
    assert isinstance(env, dict)
    assert env["TRICKY"] == TRICKY.partition("=")[2]
    assert env["EXEC_PROBE"] == "seen by exec" and env["SOCKACT_APP"] == NAME and env["SOCKACT_WORKER"] == "exec"
    assert env["PATH"].startswith(VENV_BIN + ":") and again["executable"] == os.path.join(VENV_BIN, "python3")
    assert again["cwd"] == str(shared_apps)
    # the workers' sandbox: read-only code, no privileges, seccomp, other processes hidden
    assert again["cwd_write"] == "Read-only file system"
    assert (again["no_new_privs"], again["seccomp"]) == ("1", "2")
    assert again["cap_eff"] == again["cap_bnd"] == "0000000000000000"  # CapabilityBoundingSet= (empty)
    assert again["pid1_visible"] is False
    # nothing left behind: the transient unit is collected
    leftover = box.systemctl("list-units", "--all", "--no-legend", f"{NAME}-exec-*").stdout
    assert leftover.strip() == ""
    owner = os.stat(Path("/var/lib/private") / STATE / "db.sqlite3").st_uid
    assert stat.S_IMODE(os.stat(Path("/var/lib/private") / STATE / "db.sqlite3").st_mode) == 0o600
    assert owner == worker["uid"]


def test_exit_status_stdin_and_arguments_pass_through(box: PrivateSystemd) -> None:
    failed = sockact_in(box, "exec", NAME, "--", "python3", "-c", "import sys; sys.exit(7)", check=False)
    assert (failed.returncode, failed.stderr) == (7, "")
    piped = box.run(
        sys.executable,
        "-m",
        "sockact",
        "exec",
        NAME,
        "--",
        "sh",
        "-c",
        'read line; echo "got $line"',
        input="hello\n",
        check=False,
        timeout=60,
    )
    assert (piped.returncode, piped.stdout) == (0, "got hello\n"), piped.stderr
    literal = sockact_in(box, "exec", NAME, "--", "printf", "%s|", "$HOME", "${X}", "%i", "a b", check=False)
    assert (literal.returncode, literal.stdout) == (0, "$HOME|${X}|%i|a b|"), literal.stderr


def test_on_a_terminal_the_command_gets_one(box: PrivateSystemd) -> None:
    # Its own controlling terminal (not just a terminal's descriptors): prompts, Ctrl-C and shells work.
    probe = "import os, sys; os.close(os.open('/dev/tty', os.O_RDWR)); print('tty', os.isatty(0)); sys.exit(3)"
    out = box.run(sys.executable, "-c", PTY, "exec", NAME, "--", "python3", "-c", probe, timeout=60).stdout
    text, status = out.rsplit(" ", 1)
    assert "tty True" in text and status.strip() == "3", out


def test_bad_input_is_one_line_and_a_non_zero_exit(box: PrivateSystemd) -> None:
    box.write_unit("other.target", "[Unit]\nDescription=hand-written\n")
    box.write_unit("other@.service", "[Service]\nExecStart=/bin/true\n")
    box.daemon_reload()
    cases = {
        ("exec", "nosuchapp", "--", "true"): (2, "unknown app 'nosuchapp'"),
        ("exec", "other", "--", "true"): (1, "was not written by sockact"),
        ("exec", NAME): (2, "give the command to run after --"),
        ("exec", NAME, "--"): (2, "give the command to run after --"),
        ("exec", NAME, "--", "no-such-command"): (2, "'no-such-command' is not a command in the workers' PATH"),
    }
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    for argv, (code, text) in cases.items():
        result = sockact_in(box, *argv, check=False)
        assert result.returncode == code and text in result.stderr, (argv, result.returncode, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    as_user = sockact_in(box, "exec", NAME, "--", "true", check=False, as_user=nobody)
    assert as_user.returncode == 1 and as_user.stderr == (
        "sockact: exec starts the command as a systemd unit with the workers' user and sandbox, which needs root: "
        f"run `sudo sockact exec {NAME} -- true`\n"
    )


def test_drop_ins_count_and_the_workers_runtime_directory_survives(box: PrivateSystemd) -> None:
    # A drop-in saying RuntimeDirectoryPreserve=no would have the one-off remove, when it ends, the
    # directory the running workers keep their boot-failure counters in.
    box.write_unit(
        f"{NAME}@.service.d/50-local.conf", "[Service]\nRuntimeDirectoryPreserve=no\nEnvironment=FROM_DROP_IN=yes\n"
    )
    box.daemon_reload()
    get(box)
    assert box.path(f"/run/{NAME}").is_dir()
    seen = sockact_in(box, "exec", NAME, "--", "python3", "-c", "import os; print(os.environ['FROM_DROP_IN'])")
    assert seen.stdout == "yes\n"
    assert box.path(f"/run/{NAME}").is_dir()
    assert "notes" in get(box)


def test_a_sandbox_systemd_cannot_set_up_is_named_in_one_line(box: PrivateSystemd) -> None:
    drop_in = box.unit_dir() / f"{NAME}@.service.d" / "60-broken.conf"
    drop_in.parent.mkdir(exist_ok=True)
    drop_in.write_text("[Service]\nReadWritePaths=/no-such-dir-for-exec\n")
    box.daemon_reload()
    try:
        result = sockact_in(box, "exec", NAME, "--", "true", check=False)
    finally:
        drop_in.unlink()
        box.daemon_reload()
    print(f"\n{result.stderr.strip()}")
    assert result.returncode == 226  # systemd's NAMESPACE status, passed on
    assert result.stderr.startswith(
        "sockact: systemd could not start the command as the workers run (exit 226/NAMESPACE)"
    )
    assert "/no-such-dir-for-exec: No such file or directory" in result.stderr and len(result.stderr.splitlines()) == 1
    # a command's own exit status in systemd's range is passed on without that line
    own = sockact_in(box, "exec", NAME, "--", "sh", "-c", "exit 203", check=False)
    assert (own.returncode, own.stderr) == (203, "")


# --- Django's first deploy: migrate and createsuperuser as the workers, then log into the admin ------------

DJANGO, DJANGO_PORT, DJANGO_STATE = "execdj", 8352, "execdj-state"
# The settings block of docs/django.md, as a user copies it: the database in the state directory, DEBUG,
# hosts and the secret from the environment, STATIC_ROOT for collectstatic.
DJANGO_DOC = REPO / "docs" / "django.md"


def django_settings_from_the_docs() -> str:
    block = DJANGO_DOC.read_text().split("```python\n# sockact: production settings\n", 1)[1].split("```", 1)[0]
    assert "STATE_DIRECTORY" in block and "STATIC_ROOT" in block
    return "\n" + block


ADMIN_LOGIN = textwrap.dedent("""
    import http.cookiejar, re, sys, urllib.parse, urllib.request
    base = sys.argv[1]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(base + "/admin/login/?next=/admin/", timeout=20).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    fields = {"csrfmiddlewaretoken": token, "username": "admin", "password": sys.argv[2], "next": "/admin/"}
    answer = opener.open(base + "/admin/login/?next=/admin/", urllib.parse.urlencode(fields).encode(), timeout=20)
    page = answer.read().decode()
    print(answer.geturl(), "Site administration" in page, "Log out" in page)
""")


def test_django_migrate_and_createsuperuser_then_the_admin_login_works(box: PrivateSystemd) -> None:
    project = Path(tempfile.mkdtemp(prefix="sockact-test-django-", dir="/opt"))
    try:
        subprocess.run(
            [sys.executable, "-m", "django", "startproject", "myproj", str(project)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        with open(project / "myproj" / "settings.py", "a") as settings:
            settings.write(django_settings_from_the_docs())
        for path in [project, *project.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        remove_state(DJANGO_STATE)
        sockact_in(
            box,
            "install",
            DJANGO,
            "--app",
            "myproj.wsgi:application",
            "--listen",
            f"127.0.0.1:{DJANGO_PORT}",
            "--workers",
            "1",
            "--python",
            sys.executable,
            "--chdir",
            str(project),
            "--state-dir",
            DJANGO_STATE,
            "--env",
            "DJANGO_SETTINGS_MODULE=myproj.settings",
            "--env",
            "DJANGO_ALLOWED_HOSTS=127.0.0.1",
            "--unit-dir",
            UNIT_DIR,
            "--now",
        )
        migrate = sockact_in(box, "exec", DJANGO, "--", "python3", "manage.py", "migrate", "--noinput", check=False)
        assert migrate.returncode == 0 and "Applying auth.0001_initial... OK" in migrate.stdout, migrate.stderr
        superuser = sockact_in(
            box,
            "exec",
            DJANGO,
            "--",
            "env",
            "DJANGO_SUPERUSER_PASSWORD=s3cret-pass",
            "python3",
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
            check=False,
        )
        assert superuser.returncode == 0, superuser.stderr
        login = box.run(
            sys.executable, "-c", ADMIN_LOGIN, f"http://127.0.0.1:{DJANGO_PORT}", "s3cret-pass", timeout=60
        ).stdout.split()
        print(f"\nadmin login: ended on {login[0]}, site administration {login[1]}, log out link {login[2]}")
        assert login == [f"http://127.0.0.1:{DJANGO_PORT}/admin/", "True", "True"]
        # collectstatic as the docs say: at deploy time, as root, into STATIC_ROOT, readable by all
        box.run(
            "env",
            "DJANGO_SETTINGS_MODULE=myproj.settings",
            f"STATE_DIRECTORY=/var/lib/{DJANGO_STATE}",
            sys.executable,
            str(project / "manage.py"),
            "collectstatic",
            "--noinput",
            timeout=120,
        )
        collected = project / "static" / "admin" / "css" / "base.css"
        assert collected.stat().st_mode & 0o004, oct(collected.stat().st_mode)
        # the database migrate made belongs to the workers' dynamic user: no chown after a deploy
        worker_pid = box.show(f"{DJANGO}@1.service", "MainPID")["MainPID"]
        worker_uid = int(box.run("stat", "-c", "%u", f"/proc/{worker_pid}").stdout)
        assert (Path("/var/lib/private") / DJANGO_STATE / "db.sqlite3").stat().st_uid == worker_uid != 0
    finally:
        shutil.rmtree(project, ignore_errors=True)
        remove_state(DJANGO_STATE)
