"""`sockact install`'s preflight: what would stop the workers, found before a unit is written.

Each check either passes with a short line saying what it looked at, or raises PreflightFailed with
one line that says what is wrong and how to fix it. The interpreter and --chdir are judged by every
path on their way (a pyenv, asdf or conda venv's python is a symlink into a home directory, which
ProtectHome= hides); the app is imported the way a worker imports it, by the same interpreter, in the
same directory, as the same user under the same sandbox, through a transient unit (systemd-run).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import subprocess
import time
from typing import TYPE_CHECKING, Any

from ..errors import PreflightFailed
from ..generator import sandbox
from .systemctl import run, show_by_id

if TYPE_CHECKING:
    from ..generator.spec import Listener, UnitSpec

IMPORT_TIMEOUT = 60.0  # an app import that takes longer is reported, not waited for
SYSTEM_BUS = "/run/dbus/system_bus_socket"  # systemd-run --wait talks to systemd through it
# Exit statuses of systemd's own (sd_exec) failures, before the program ran (systemd.exec(5)).
EXIT_CHDIR = 200
EXIT_EXEC = 203
EXIT_USER = 217
EXIT_NO_SOCKACT = 90  # the check script: the interpreter has no sockact
EXIT_APP = 91  # the check script: the app did not import (its reason on the last stdout line)

# Runs in the workers' interpreter; loads the app exactly as `sockact run` does.
IMPORT_CHECK = f"""
import sys
try:
    from sockact.errors import SockactError
    from sockact.runtime.main import load_app
except Exception as exc:
    print(f"{{type(exc).__name__}}: {{exc}}")
    sys.exit({EXIT_NO_SOCKACT})
try:
    load_app(sys.argv[1])
except SockactError as exc:
    print(exc)
    sys.exit({EXIT_APP})
"""


def preflight(spec: UnitSpec) -> list[str]:
    """Every check in order; one line per check that passed. PreflightFailed at the first that fails."""
    if spec.container is not None:
        from . import container_checks  # podman's own checks: the host's interpreter does not matter

        return container_checks.preflight(spec)
    passed = [check_interpreter(spec)]
    passed += check_paths(spec)
    passed += [check_port(spec, item) if item.is_tcp else check_unix_socket(spec, item) for item in spec.listeners]
    if spec.app is not None:  # the one slow check comes last
        passed.append(check_import(spec))
    elif spec.exec_argv is not None and _sandboxed():
        passed += check_exec(spec)
    return passed


# --- the interpreter and the paths -----------------------------------------------------------------


def link_chain(path: str) -> list[str]:
    """path, each symlink target on the way (made absolute) and the real path, in order, without repeats."""
    chain, current = [path], path
    for _ in range(40):  # the kernel's own limit on nested symlinks
        if not os.path.islink(current):
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
        chain.append(current)
    chain.append(os.path.realpath(path))
    return list(dict.fromkeys(chain))


def _hidden_top(path: str) -> str | None:
    return next((top for top in sandbox.HOME_PREFIXES if path == top or path.startswith(top + "/")), None)


def _home_hidden(spec: UnitSpec) -> bool:
    """True when the workers run with ProtectHome=yes: /home, /root and /run/user are empty to them."""
    return any(entry.key == "ProtectHome" and entry.value == "yes" for entry in sandbox.chosen(spec))


def _unreachable(spec: UnitSpec, path: str) -> tuple[str, str] | None:
    """(hop, hidden top) for the first path on the way to `path` that ProtectHome= hides, if any."""
    if not _home_hidden(spec):
        return None
    for hop in link_chain(path)[1:]:
        top = _hidden_top(hop)
        if top:
            return hop, top
    return None


def program(spec: UnitSpec) -> tuple[str, str]:
    """(option, path) of what ExecStart= runs first: the interpreter, or the --exec program."""
    if spec.exec_argv is not None:
        return "--exec", spec.exec_argv[0]
    return "--python", spec.python


def check_interpreter(spec: UnitSpec) -> str:
    option, path = program(spec)
    real = os.path.realpath(path)
    if not os.path.lexists(path):
        raise PreflightFailed(
            f"{option} {path} does not exist; give the path of the venv's python (e.g. /srv/myapp/venv/bin/python)"
            if option == "--python"
            else f"{option} {path} does not exist; give the absolute path of the program"
        )
    if not os.path.exists(path):
        raise PreflightFailed(
            f"{option} {path} is a symlink to {real}, which does not exist (the interpreter the "
            "venv was made from is gone); make the venv again with /usr/bin/python3 -m venv"
        )
    if not os.path.isfile(real) or not os.access(real, os.X_OK):
        raise PreflightFailed(
            f"{option} {path} resolves to {real}, which is not an executable file; "
            "give the venv's python (or chmod +x it)"
        )
    hidden = _unreachable(spec, path)
    if hidden:
        hop, top = hidden
        what = "the interpreter" if option == "--python" else "the program"
        raise PreflightFailed(
            f"{what} {path} resolves to {hop} under {top}, which the workers cannot reach (ProtectHome=); "
            f"make the venv from /usr/bin/python3 (python3 -m venv …) or pass {option} with "
            f"{'an interpreter' if option == '--python' else 'a program'} outside /home, /root and /run/user"
        )
    return f"{option} {path}: executable ({real})"


def check_paths(spec: UnitSpec) -> list[str]:
    """--chdir is a directory the workers can reach; --env-file is a readable file."""
    passed = []
    if spec.chdir is not None:
        if not os.path.exists(spec.chdir):
            raise PreflightFailed(
                f"--chdir {spec.chdir} does not exist; create it or give the directory that holds the app's code"
            )
        if not os.path.isdir(spec.chdir):
            raise PreflightFailed(
                f"--chdir {spec.chdir} is not a directory; give the directory that holds the app's code"
            )
        hidden = _unreachable(spec, spec.chdir)
        if hidden:
            raise PreflightFailed(
                f"--chdir {spec.chdir} resolves to {hidden[0]} under {hidden[1]}, which the "
                "workers cannot reach (ProtectHome=); move the app outside /home, /root and "
                "/run/user (e.g. /srv) or give --chdir that path"
            )
        passed.append(f"--chdir {spec.chdir}: a directory")
    if spec.env_file is not None:
        if not os.path.isfile(spec.env_file):
            raise PreflightFailed(
                f"--env-file {spec.env_file} does not exist or is not a file; create it "
                "(KEY=VALUE lines) or leave --env-file out"
            )
        try:
            with open(spec.env_file, "rb"):
                pass
        except OSError as exc:
            raise PreflightFailed(
                f"--env-file {spec.env_file} cannot be read ({exc.strerror}); "
                "make it readable by root (systemd reads it)"
            ) from None
        passed.append(f"--env-file {spec.env_file}: readable")
    passed += [check_writable(spec, path) for path in spec.writable]
    return passed


def _has_acl(path: str) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return False
    return True


def check_writable(spec: UnitSpec, path: str) -> str:
    """A --writable path exists (systemd cannot set up the sandbox otherwise) and the workers' user may
    write it: ReadWritePaths= lifts the read-only mount, not the file's permissions."""
    if not os.path.exists(path):
        raise PreflightFailed(
            f"--writable {path} does not exist; create it first (systemd cannot mount a "
            "missing path into the workers' sandbox)"
        )
    info = os.stat(path)
    mode = stat.filemode(info.st_mode)
    if _has_acl(path):
        return f"--writable {path}: exists (an ACL decides who writes it: not judged here)"
    if spec.user is None and not spec.dynamic_user:
        return f"--writable {path}: exists (the workers run as root)"
    if spec.dynamic_user:
        if info.st_mode & stat.S_IWOTH:
            return f"--writable {path}: writable by every user ({mode})"
        owner = _name(pwd.getpwuid, info.st_uid)
        raise PreflightFailed(
            f"--writable {path} belongs to {owner} ({mode}): the workers' dynamic user cannot write it; keep the "
            f"app's data in --state-dir NAME (systemd makes /var/lib/NAME and gives it to the workers), or run "
            f"them as a user of yours (--user web) and chown that user {path}"
        )
    name = str(spec.user)
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return f"--writable {path}: exists (user {name} is not in /etc/passwd: not judged here)"
    groups = {user.pw_gid} | {group.gr_gid for group in grp.getgrall() if user.pw_name in group.gr_mem}
    can = (
        (info.st_uid == user.pw_uid and info.st_mode & stat.S_IWUSR)
        or (info.st_gid in groups and info.st_mode & stat.S_IWGRP)
        or info.st_mode & stat.S_IWOTH
    )
    if not can:
        owner = _name(pwd.getpwuid, info.st_uid)
        raise PreflightFailed(
            f"--writable {path} belongs to {owner} ({mode}): user {name} cannot write "
            f"it; chown {name} {path} (or give its group write access)"
        )
    return f"--writable {path}: writable by {name}"


def _name(lookup: Any, number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


# --- the app imports, as a worker imports it -------------------------------------------------------


def _word(value: str) -> str:
    """One double-quoted word for a systemd-run property (no specifiers are expanded there)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sandbox_properties(spec: UnitSpec) -> list[str]:
    """The worker's user, directory, environment and sandbox as systemd-run -p arguments.

    State, cache and logs directories are not created (a check writes nothing), but their variables are
    set to where systemd will put them: settings that read $STATE_DIRECTORY at import (Django's database
    path) import as they will in a worker.
    """
    props = list(sandbox.lines(spec))
    for variable, root, name in (
        ("STATE_DIRECTORY", "/var/lib", spec.state_dir),
        ("CACHE_DIRECTORY", "/var/cache", spec.cache_dir),
        ("LOGS_DIRECTORY", "/var/log", spec.logs_dir),
    ):
        if name is not None:
            props.append(f"Environment={_word(f'{variable}={root}/{name}')}")
    if spec.run_as is not None:
        props.append(f"User={spec.run_as}")
    if spec.chdir is not None:
        props.append(f"WorkingDirectory={spec.chdir}")
    props += [f"Environment={_word(f'{key}={value}')}" for key, value in spec.env]
    if spec.env_file is not None:
        props.append(f"EnvironmentFile={spec.env_file}")
    props += [f"ReadWritePaths={_word(path)}" for path in spec.writable]
    return props


def import_command(spec: UnitSpec) -> list[str]:
    assert spec.app is not None
    flags = [arg for prop in sandbox_properties(spec) for arg in ("-p", prop)]
    return [
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--collect",
        "--no-ask-password",
        f"--description=sockact install {spec.name}: import check",
        "-p",
        f"RuntimeMaxSec={IMPORT_TIMEOUT:g}",
        *flags,
        "--",
        spec.python,
        "-c",
        IMPORT_CHECK,
        spec.app,
    ]


def _sandboxed() -> bool:
    """systemd-run needs root and the system bus; without them the import runs as a plain subprocess."""
    return os.geteuid() == 0 and os.path.exists(SYSTEM_BUS)


def check_import(spec: UnitSpec) -> str:
    assert spec.app is not None
    sandboxed = _sandboxed()
    cwd: str | None = None
    env: dict[str, str] | None = None
    if sandboxed:  # systemd ends the check at RuntimeMaxSec=; the margin only covers systemd-run itself
        argv = import_command(spec)
    else:
        argv, cwd, env = [spec.python, "-c", IMPORT_CHECK, spec.app], spec.chdir, {**os.environ, **dict(spec.env)}
    began = time.monotonic()
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=IMPORT_TIMEOUT + 15,
            check=False,
        )
    except FileNotFoundError:
        raise PreflightFailed(f"cannot run {argv[0]}; install systemd (or check --python)") from None
    except subprocess.TimeoutExpired:
        result = subprocess.CompletedProcess(argv, -1, "", "")
    if result.returncode != 0 and time.monotonic() - began >= IMPORT_TIMEOUT:
        raise PreflightFailed(
            f"importing {spec.app.partition(':')[0]} took longer than {IMPORT_TIMEOUT:g} s; "
            "connect to databases and services at startup (lifespan), not at import"
        )
    if result.returncode != 0:
        raise PreflightFailed(_import_failure(spec, result))
    how = (
        "as the workers' user under their sandbox"
        if sandboxed
        else "as a plain subprocess: without root and the system bus there is no sandbox to check it in"
    )
    return f"--app {spec.app}: imports ({how})"


def _shebang(path: str) -> str | None:
    """The interpreter a script's "#!" line names (the kernel runs it as the workers' user too)."""
    try:
        with open(path, "rb") as script:
            first = script.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else None


def check_exec(spec: UnitSpec) -> list[str]:
    """--exec: no app to import, but the program (and a script's interpreter) must be executable by the
    workers' user inside their sandbox; `test -x` there asks the kernel exactly that."""
    assert spec.exec_argv is not None
    program_path = spec.exec_argv[0]
    passed = []
    for what, path in (("the program", program_path), ("its #! interpreter", _shebang(program_path))):
        if path is None:
            continue
        argv = [
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "--collect",
            "--no-ask-password",
            f"--description=sockact install {spec.name}: program check",
            *[arg for prop in sandbox_properties(spec) for arg in ("-p", prop)],
            "--",
            "/usr/bin/test",
            "-x",
            path,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
        if result.returncode != 0:
            shown = path if what == "the program" else f"{path} (the #! line of {program_path})"
            raise PreflightFailed(
                f"the workers' user cannot execute {shown} under their sandbox (ProtectHome=, directory modes): "
                "put it outside /home and /root with every directory on its way open to others (mode 755), "
                "or pass --user ACCOUNT"
            )
        passed.append(f"--exec: {what} {path} executable by the workers' user under their sandbox")
    return passed


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _import_failure(spec: UnitSpec, result: subprocess.CompletedProcess[str]) -> str:
    code, said = result.returncode, _last_line(result.stdout)
    if code == EXIT_APP and said:
        return f"{said}; fix the app or --app/--chdir (checked with {spec.python} as the workers run it)"
    if code == EXIT_NO_SOCKACT:
        return (
            f"{spec.python} cannot import sockact ({said}); install sockact into that venv "
            f"({spec.python} -m pip install with the sockact wheel or checkout) "
            "or pass --python with one that has it"
        )
    if code == EXIT_EXEC:
        return (
            f"the workers' user cannot execute {spec.python} (systemd exit 203): every directory on its way, "
            f"and on the way to its real file {os.path.realpath(spec.python)}, must be open to others (mode 755), "
            "or pass --user ACCOUNT"
        )
    if code == EXIT_USER:
        return (
            f"--user {spec.user} does not exist here (systemd exit 217); create the account, "
            "or leave --user out for a dynamic user"
        )
    if code == EXIT_CHDIR:
        return (
            f"the workers' user cannot enter --chdir {spec.chdir} (systemd exit 200): make it and its parents "
            "open to others (mode 755), or pass --user ACCOUNT"
        )
    detail = _last_line(result.stderr) or _last_line(result.stdout) or f"exit status {code}"
    return f"the import check of {spec.app} failed ({detail}); check --python, --chdir and --env-file"


# --- the port --------------------------------------------------------------------------------------


def bind_address(listener: Listener) -> tuple[socket.AddressFamily, str, int]:
    """How systemd binds a ListenStream= address: a bare port is [::] with IPv4 mapped in."""
    address = listener.address
    if address.isdigit():
        return socket.AF_INET6, "::", int(address)
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


def port_free(listener: Listener) -> bool | None:
    """True if a socket could bind the address now, False if something else holds the port, None if unknown."""
    family, host, port = bind_address(listener)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as systemd does; TIME_WAIT is no owner
        if family == socket.AF_INET6 and host == "::":
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            return None  # EACCES below 1024 without root, EADDRNOTAVAIL for an address not on this host
    return True


def _own_socket_ports(spec: UnitSpec) -> set[int]:
    """Ports NAME.socket holds now: a re-install over a listening socket is no conflict."""
    unit = f"{spec.name}.socket"
    props = show_by_id([unit], ["ActiveState", "Listen"]).get(unit, {})
    if props.get("ActiveState") != "active":
        return set()
    ports = set()
    for line in props.get("Listen", "").splitlines():
        address = line.rpartition(" (")[0] or line
        tail = address.rpartition(":")[2]
        if tail.isdigit():
            ports.add(int(tail))
    return ports


def port_owner(port: int) -> str | None:
    """'python3, pid 812' (or systemd's socket unit) for the process listening on a TCP port, if it can be seen."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port or not conn.pid:
            continue
        if conn.pid == 1:
            return _socket_unit_on(port) or "systemd, pid 1"
        try:
            return f"{psutil.Process(conn.pid).name()}, pid {conn.pid}"
        except psutil.Error:
            return f"pid {conn.pid}"
    return None


def _socket_unit_on(port: int) -> str | None:
    """The socket unit listening on port, from `systemctl list-sockets`."""
    listing = run(["systemctl", "list-sockets", "--all", "--no-legend", "--no-pager"], check=False).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].rpartition(":")[2] == str(port):
            return f"systemd's {fields[1]}"
    return None


def check_port(spec: UnitSpec, listener: Listener) -> str:
    _, _, port = bind_address(listener)
    free = port_free(listener)
    if free is None:
        return f"--listen {listener.address}: not checked here (binding needs root or the address is not local)"
    if free:
        return f"--listen {listener.address}: free"
    if port in _own_socket_ports(spec):
        return f"--listen {listener.address}: held by {spec.name}.socket already"
    owner = port_owner(port)
    by = f" by {owner}" if owner else ""
    raise PreflightFailed(f"port {port} is in use{by}; stop it or pick another --listen")


def _own_unix_paths(spec: UnitSpec) -> set[str]:
    unit = f"{spec.name}.socket"
    props = show_by_id([unit], ["ActiveState", "Listen"]).get(unit, {})
    if props.get("ActiveState") != "active":
        return set()
    return {line.rpartition(" (")[0] or line for line in props.get("Listen", "").splitlines()}


def unix_owner(path: str) -> str | None:
    """'nginx, pid 812' for the process listening on a Unix socket path, if it can be seen."""
    import psutil

    try:
        connections = psutil.net_connections(kind="unix")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        # types-psutil types laddr as (ip, port); for a Unix socket psutil gives its path, a str
        if conn.laddr == path and conn.pid:  # type: ignore[comparison-overlap]
            if conn.pid == 1:
                return "systemd, pid 1"
            try:
                return f"{psutil.Process(conn.pid).name()}, pid {conn.pid}"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def check_unix_socket(spec: UnitSpec, listener: Listener) -> str:
    """systemd unlinks whatever is at a ListenStream= path before it binds: a live socket there would be
    taken from the server listening on it without a word, so refuse that; a stale one is fine."""
    path = listener.address
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return f"--listen {path}: free"
    except OSError as exc:
        return f"--listen {path}: not checked here ({exc.strerror})"
    if not stat.S_ISSOCK(mode):
        raise PreflightFailed(f"--listen {path} exists and is not a socket; remove it or pick another path")
    if path in _own_unix_paths(spec):
        return f"--listen {path}: held by {spec.name}.socket already"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except OSError:
            return f"--listen {path}: a stale socket file nothing listens on (systemd replaces it)"
    owner = unix_owner(path)
    by = f" by {owner}" if owner else ""
    raise PreflightFailed(f"the unix socket {path} is in use{by}; stop it or pick another --listen")


__all__ = ["PreflightFailed", "link_chain", "preflight"]
