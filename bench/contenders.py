"""The contenders: how each server is started, stopped, reloaded and restarted inside the box.

Every contender runs inside the same private systemd, so all of them share one network namespace
and wrk reaches each over the same loopback. sockact runs as generated units under that systemd;
the others are started the way their docs say, as plain processes (gunicorn, uvicorn, granian,
uWSGI, node) or under PM2's own daemon.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from sockact.box import HarnessError, PrivateSystemd

from .apps.asgi import BODY
from .apps.payload import FASTAPI_BODY, FLASK_BODY

HELLO = "/"
SLEEP = "/sleep"
START_TIMEOUT_S = 60.0


class NotAvailable(Exception):
    """A contender, or one of its scenarios, cannot run here; the message says why."""


@dataclass
class Bench:
    """What every contender needs: the box, the installed tools, the worker count."""

    box: PrivateSystemd
    root: pathlib.Path  # where bench/run installed the venv and the Node packages
    repo: pathlib.Path
    workers: int
    logs: pathlib.Path

    @property
    def venv_bin(self) -> pathlib.Path:
        return self.root / "venv" / "bin"

    @property
    def python(self) -> str:
        return str(self.venv_bin / "python")

    @property
    def pm2(self) -> str:
        return str(self.root / "node" / "node_modules" / ".bin" / "pm2")

    @property
    def app_dir(self) -> str:
        """Where bench/run copied the apps (as package bench.apps), readable by any user."""
        return str(self.root / "apps")

    @property
    def node_app(self) -> str:
        return str(self.root / "apps" / "bench" / "apps" / "hello.js")

    def get(self, port: int, path: str = HELLO, body: bytes = BODY) -> str | None:
        """None when GET answers 200 with the expected body, else what came back instead."""
        done = self.box.run(
            "curl",
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            f"http://127.0.0.1:{port}{path}",
            check=False,
        )
        answer, _, code = done.stdout.rpartition("\n")
        if code == "200" and answer.encode() == body:
            return None
        return f"HTTP {code or 'no answer'} ({answer[:80]!r})" if code != "000" else "no answer"

    def wait_serving(self, port: int, body: bytes = BODY, timeout: float = START_TIMEOUT_S) -> None:
        self.box.wait_for(
            lambda: self.get(port, body=body) is None, timeout=timeout, interval=0.05, what=f"a 200 on port {port}"
        )


@dataclass
class Contender:
    """One server serving one app on its own port."""

    key: str
    server: str
    app: str  # "ASGI", "WSGI", "Node", or a framework app: "FastAPI" (ASGI), "Flask" (WSGI)
    port: int
    paths: tuple[str, ...] = (HELLO,)
    reload_how: str = ""  # the tool's own zero-downtime reload, as a user would type it
    restart_how: str = ""  # a full stop/start
    body: bytes = BODY  # what GET / answers

    def prepare(self, bench: Bench) -> None:
        """One-time setup that is not part of a start (and so not of the cold-start time)."""

    def start(self, bench: Bench) -> None:
        """Issue the start; may return before the workers serve (wait_ready waits for that)."""
        raise NotImplementedError

    def wait_ready(self, bench: Bench) -> None:
        raise NotImplementedError

    def stop(self, bench: Bench) -> None:
        raise NotImplementedError

    def worker_pids(self, bench: Bench) -> list[int]:
        """The worker processes, as numbered inside the box."""
        raise NotImplementedError

    def worker_processes(self, bench: Bench) -> list[list[int]]:
        """Each worker's processes, for its memory: the worker alone unless it has helpers of its own."""
        return [[pid] for pid in self.worker_pids(bench)]

    def reload(self, bench: Bench) -> None:
        """The zero-downtime reload; returns once every worker was replaced. NotAvailable if none."""
        raise NotAvailable("no built-in zero-downtime reload")

    def restart(self, bench: Bench) -> None:
        """Stop everything, start again, return once serving."""
        raise NotImplementedError

    def check(self, bench: Bench) -> None:
        """Raise NotAvailable when the contender starts but does not serve the app correctly."""
        problem = bench.get(self.port, body=self.body)
        if problem is not None:
            raise NotAvailable(f"{self.server} answered GET / with {problem}")


def wait_replaced(bench: Bench, contender: Contender, old: set[int], timeout: float = START_TIMEOUT_S) -> None:
    """Wait until no old worker is left and a full set of new ones runs."""

    def replaced() -> bool:
        pids = set(contender.worker_pids(bench))
        return not pids & old and len(pids) == bench.workers

    bench.box.wait_for(replaced, timeout=timeout, interval=0.05, what=f"{contender.server}'s workers to be replaced")


@dataclass
class Sockact(Contender):
    """Generated units: NAME.socket owns the port, NAME@1..N serve it, NAME.target groups them."""

    app_ref: str = ""
    installed: bool = False

    @property
    def unit(self) -> str:
        return f"bench-{self.key}"

    def prepare(self, bench: Bench) -> None:
        if not self.installed:
            self.install(bench)

    def install(self, bench: Bench) -> None:
        argv = [
            str(bench.venv_bin / "sockact"),
            "generate",
            self.unit,
            "--app",
            self.app_ref,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(bench.workers),
            "--chdir",
            bench.app_dir,
            "--python",
            bench.python,
            "--stop-timeout",
            "30",
            "--output-dir",
            str(bench.box.unit_dir()),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NotAvailable(f"sockact generate failed: {done.stderr.strip()}")
        bench.box.daemon_reload()
        self.installed = True

    def instances(self, bench: Bench) -> list[str]:
        return [f"{self.unit}@{i}.service" for i in range(1, bench.workers + 1)]

    def start(self, bench: Bench) -> None:
        bench.box.systemctl("start", f"{self.unit}.socket", f"{self.unit}.target")

    def wait_ready(self, bench: Bench) -> None:
        # Type=notify: an instance turns active only once its runtime sent READY=1.
        for instance in self.instances(bench):
            bench.box.wait_active(instance, timeout=START_TIMEOUT_S)
        bench.wait_serving(self.port, self.body)

    def stop(self, bench: Bench) -> None:
        bench.box.systemctl("stop", f"{self.unit}.target", f"{self.unit}.socket", timeout=90)

    def worker_pids(self, bench: Bench) -> list[int]:
        pids = []
        for instance in self.instances(bench):
            state = bench.box.show(instance, "MainPID", "ActiveState")
            if state.get("ActiveState") == "active" and state.get("MainPID", "0") != "0":
                pids.append(int(state["MainPID"]))
        return pids

    def worker_processes(self, bench: Bench) -> list[list[int]]:
        # The unit's main process (sockact run --respawn) and the serving process it forked.
        return [[pid, *_children(bench.box, pid)] for pid in self.worker_pids(bench)]

    def check(self, bench: Bench) -> None:
        try:
            super().check(bench)
        except NotAvailable as exc:
            log = (
                bench.box.run(
                    "journalctl", "--no-pager", "-q", "-o", "cat", "-n", "3", "-u", f"{self.unit}@*", check=False
                )
                .stdout.strip()
                .replace("\n", " / ")
            )
            raise NotAvailable(f"`sockact run {self.app_ref}`: {exc}; its log: {log[-300:]}") from None

    def reload(self, bench: Bench) -> None:
        probe = bench.box.run(str(bench.venv_bin / "sockact"), "reload", "--help", check=False)
        if probe.returncode != 0:
            raise NotAvailable("this sockact has no `reload` command yet")
        old = set(self.worker_pids(bench))
        done = bench.box.run(str(bench.venv_bin / "sockact"), "reload", self.unit, check=False, timeout=180)
        if done.returncode != 0:
            raise NotAvailable(f"`sockact reload {self.unit}` failed: {(done.stderr or done.stdout).strip()[-300:]}")
        wait_replaced(bench, self, old)

    def restart(self, bench: Bench) -> None:
        old = set(self.worker_pids(bench))
        bench.box.systemctl("restart", f"{self.unit}.target", timeout=120)
        wait_replaced(bench, self, old)
        bench.wait_serving(self.port, self.body)


@dataclass
class Process(Contender):
    """A server run as a process tree inside the box: a master and its forked workers, in a scope unit
    of their own (as sockact's workers are in their services), so every contender runs under the same
    systemd in a cgroup of its own, as it would on a host."""

    argv_for: Callable[[Bench, Process], list[str]] = field(default=lambda bench, c: [])
    env_for: Callable[[Bench, Process], dict[str, str]] = field(default=lambda bench, c: {})
    is_worker: Callable[[str], bool] = field(default=lambda cmdline: True)
    reload_signal: signal.Signals | None = None
    proc: subprocess.Popen[bytes] | None = None
    master: int = 0  # the master's PID inside the box

    def start(self, bench: Bench) -> None:
        log = open(bench.logs / f"{self.key}.log", "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = bench.box.popen(
                *in_scope(self.argv_for(bench, self)),
                env=self.env_for(bench, self),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self.master = 0

    def master_pid(self, bench: Bench) -> int:
        if not self.master:
            if self.proc is None:
                raise HarnessError(f"{self.server} was not started")
            self.master = _inner_child(self.proc.pid)
        return self.master

    def wait_ready(self, bench: Bench) -> None:
        def workers_up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"{self.server} exited with status {self.proc.returncode}; see {self.key}.log")
            return len(self.worker_pids(bench)) == bench.workers

        bench.box.wait_for(workers_up, timeout=START_TIMEOUT_S, what=f"{bench.workers} {self.server} workers")
        bench.wait_serving(self.port, self.body)

    def worker_pids(self, bench: Bench) -> list[int]:
        return [pid for pid in _children(bench.box, self.master_pid(bench)) if self.is_worker(_cmdline(bench.box, pid))]

    def signal(self, bench: Bench, sig: signal.Signals) -> None:
        bench.box.run("kill", "-s", sig.name.removeprefix("SIG"), str(self.master_pid(bench)))

    def stop(self, bench: Bench) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(bench, signal.SIGTERM)
        try:
            self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def reload(self, bench: Bench) -> None:
        if self.reload_signal is None:
            raise NotAvailable("no built-in zero-downtime reload")
        old = set(self.worker_pids(bench))
        self.signal(bench, self.reload_signal)
        wait_replaced(bench, self, old)
        bench.wait_serving(self.port, self.body)

    def restart(self, bench: Bench) -> None:
        self.stop(bench)
        self.start(bench)
        self.wait_ready(bench)


@dataclass
class Pm2(Contender):
    """`pm2 start -i N`: PM2's daemon is the cluster primary, the workers are node processes."""

    name: str = "bench-pm2"

    def run_pm2(self, bench: Bench, *args: str, timeout: float = 120, scope: bool = False) -> str:
        env = {"PM2_HOME": "/tmp/pm2", "BENCH_PORT": str(self.port)}
        argv = [bench.pm2, *args]
        return bench.box.run(*(in_scope(argv) if scope else argv), env=env, timeout=timeout).stdout

    def start(self, bench: Bench) -> None:
        # The daemon this starts forks from the CLI, and so stays in the CLI's scope.
        self.run_pm2(bench, "start", bench.node_app, "-i", str(bench.workers), "--name", self.name, scope=True)

    def wait_ready(self, bench: Bench) -> None:
        bench.box.wait_for(
            lambda: len(self.worker_pids(bench)) == bench.workers,
            timeout=START_TIMEOUT_S,
            what=f"{bench.workers} pm2 workers online",
        )
        bench.wait_serving(self.port, self.body)

    def stop(self, bench: Bench) -> None:
        # Every start is a cold one, daemon included, as after a boot.
        self.run_pm2(bench, "kill")

    def worker_pids(self, bench: Bench) -> list[int]:
        listing = json.loads(self.run_pm2(bench, "jlist") or "[]")
        return [
            proc["pid"]
            for proc in listing
            if proc.get("name") == self.name and proc.get("pm2_env", {}).get("status") == "online" and proc["pid"]
        ]

    def reload(self, bench: Bench) -> None:
        old = set(self.worker_pids(bench))
        self.run_pm2(bench, "reload", self.name)
        wait_replaced(bench, self, old)
        bench.wait_serving(self.port, self.body)

    def restart(self, bench: Bench) -> None:
        old = set(self.worker_pids(bench))
        self.run_pm2(bench, "restart", self.name)
        wait_replaced(bench, self, old)
        bench.wait_serving(self.port, self.body)


def in_scope(argv: list[str]) -> list[str]:
    """argv run in a transient scope unit: systemd-run execs it in place, so PIDs and signals are its own."""
    return ["systemd-run", "--scope", "--quiet", "--collect", "--", *argv]


def _inner_child(host_pid: int, timeout: float = 10.0) -> int:
    """The PID, as numbered inside the box, of the command nsenter (host_pid) forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _read(pathlib.Path(f"/proc/{host_pid}/task/{host_pid}/children")).split()
        if children:
            for line in _read(pathlib.Path(f"/proc/{children[0]}/status")).splitlines():
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
        time.sleep(0.005)
    raise HarnessError(f"nsenter (PID {host_pid}) started no command")


def _children(box: PrivateSystemd, pid: int) -> list[int]:
    return [int(child) for child in _read(box.path(f"/proc/{pid}/task/{pid}/children")).split()]


def _cmdline(box: PrivateSystemd, pid: int) -> str:
    return _read(box.path(f"/proc/{pid}/cmdline")).replace("\0", " ")


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the process exited meanwhile
        return ""


def pss_mb(box: PrivateSystemd, pid: int) -> float | None:
    """Proportional set size: pages shared with other processes (a master that forked its workers,
    sockact's per-unit parent) count in shares, so processes of one tree add up to what they use."""
    for line in _read(box.path(f"/proc/{pid}/smaps_rollup")).splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return None


def memory_mb(box: PrivateSystemd, pids: list[int]) -> float | None:
    """The PSS of one worker's processes together, None if one of them could not be read."""
    sizes = [pss_mb(box, pid) for pid in pids]
    return None if not sizes or any(size is None for size in sizes) else sum(size for size in sizes if size)


def lineup(bench: Bench) -> list[Contender]:
    """Every contender, on ports of their own so a slow stop never blocks the next start."""
    return [*hello_lineup(bench), *framework_lineup(bench)]


def hello_lineup(bench: Bench) -> list[Contender]:
    """The servers on the hello apps (and Node's for reference); their deploys are measured too."""
    return [
        Sockact(
            "sockact-asgi",
            "sockact",
            "ASGI",
            8001,
            (HELLO, SLEEP),
            "sockact reload NAME",
            "systemctl restart NAME.target",
            app_ref="bench.apps.asgi:app",
        ),
        granian("granian-asgi", "ASGI", 8008, "bench.apps.asgi:app", (HELLO, SLEEP)),
        gunicorn_uvicorn("gunicorn-uvicorn", "ASGI", 8002, "bench.apps.asgi:app", (HELLO, SLEEP)),
        uvicorn_workers("uvicorn", "ASGI", 8003, "bench.apps.asgi:app", (HELLO, SLEEP)),
        Sockact(
            "sockact-wsgi",
            "sockact",
            "WSGI",
            8004,
            (HELLO,),
            "sockact reload NAME",
            "systemctl restart NAME.target",
            app_ref="bench.apps.wsgi:app",
        ),
        granian("granian-wsgi", "WSGI", 8009, "bench.apps.wsgi:app"),
        uwsgi("uwsgi", "WSGI", 8010, "bench.apps.wsgi:app"),
        gunicorn_sync("gunicorn-sync", "WSGI", 8005, "bench.apps.wsgi:app"),
        Process(
            "node-cluster",
            "node cluster",
            "Node",
            8006,
            (HELLO, SLEEP),
            "",
            "kill -TERM PRIMARY; start",
            argv_for=lambda b, c: ["node", b.node_app],
            env_for=lambda b, c: {"BENCH_WORKERS": str(b.workers), "BENCH_PORT": str(c.port)},
        ),
        Pm2("pm2", "pm2", "Node", 8007, (HELLO, SLEEP), "pm2 reload NAME", "pm2 restart NAME"),
    ]


def framework_lineup(bench: Bench) -> list[Contender]:
    """The FastAPI and Flask apps, each under every server of its interface (uWSGI has no ASGI);
    their deploys are the hello rows' own."""
    fastapi_ref, flask_ref = "bench.apps.fastapi_app:app", "bench.apps.flask_app:app"
    found: list[Contender] = [
        Sockact(
            "sockact-fastapi",
            "sockact",
            "FastAPI",
            8011,
            (HELLO,),
            "sockact reload NAME",
            "systemctl restart NAME.target",
            app_ref=fastapi_ref,
        ),
        granian("granian-fastapi", "FastAPI", 8012, fastapi_ref),
        gunicorn_uvicorn("gunicorn-uvicorn-fastapi", "FastAPI", 8013, fastapi_ref),
        uvicorn_workers("uvicorn-fastapi", "FastAPI", 8014, fastapi_ref),
        Sockact(
            "sockact-flask",
            "sockact",
            "Flask",
            8015,
            (HELLO,),
            "sockact reload NAME",
            "systemctl restart NAME.target",
            app_ref=flask_ref,
        ),
        granian("granian-flask", "Flask", 8016, flask_ref),
        uwsgi("uwsgi-flask", "Flask", 8018, flask_ref),
        gunicorn_sync("gunicorn-sync-flask", "Flask", 8017, flask_ref),
    ]
    for contender in found:
        contender.body = FASTAPI_BODY if contender.app == "FastAPI" else FLASK_BODY
    return found


QUIET = ["--log-level", "warning"]


def deploys_not_measured(contender: Contender) -> str:
    """Why a contender's reload and restart are left out ("" when they are measured): they would
    repeat what another row already shows."""
    if contender.app in ("FastAPI", "Flask"):
        return "same server as its hello-app row; not repeated"
    if contender.key == "sockact-wsgi":
        return "same runtime as the ASGI row; not repeated"
    return ""


def granian(key: str, app: str, port: int, app_ref: str, paths: tuple[str, ...] = (HELLO,)) -> Process:
    """`granian --interface asgi|wsgi --workers N`: a Rust HTTP core; the master forks the workers,
    which share one listening socket. Its other settings are its defaults, as most users run it."""
    interface = "wsgi" if app in ("WSGI", "Flask") else "asgi"
    return Process(
        key,
        "granian",
        app,
        port,
        paths,
        "kill -HUP MASTER",
        "kill -TERM MASTER; start",
        argv_for=lambda b, c: [
            str(b.venv_bin / "granian"),
            "--interface",
            interface,
            "--workers",
            str(b.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(c.port),
            "--working-dir",
            b.app_dir,
            "--no-access-log",
            *QUIET,
            app_ref,
        ],
        reload_signal=signal.SIGHUP,
    )


def uwsgi(key: str, app: str, port: int, app_ref: str) -> Process:
    """uWSGI serving HTTP itself, the fastest way measured here: the master preforks N processes on one
    --http-socket (--http would put a router process in front of them). One thread each: with these apps
    threads only add GIL contention (2 processes: about 11,000 req/s on the hello app; 2 x 2 or 2 x 4
    threads: 7,000-10,000). The native HTTP socket keeps no connection alive for a preforked process (a
    kept connection would pin it), so every response closes its connection, and "Connection: close" says
    so (without it wrk counts each close as a read error, as clients would retry). --listen 1024 as
    granian's default backlog (uWSGI's own is 100); --die-on-term makes SIGTERM a stop, not uWSGI 2.0's
    brutal reload."""
    return Process(
        key,
        "uWSGI",
        app,
        port,
        (HELLO,),
        "kill -HUP MASTER",
        "kill -TERM MASTER; start",
        argv_for=lambda b, c: [
            str(b.venv_bin / "uwsgi"),
            "--http-socket",
            f"127.0.0.1:{c.port}",
            "--master",
            "--processes",
            str(b.workers),
            "--listen",
            "1024",
            "--add-header",
            "Connection: close",
            "--chdir",
            b.app_dir,
            "--pythonpath",
            b.app_dir,
            "--module",
            app_ref,
            "--need-app",
            "--die-on-term",
            "--disable-logging",
        ],
        reload_signal=signal.SIGHUP,
    )


def gunicorn_uvicorn(key: str, app: str, port: int, app_ref: str, paths: tuple[str, ...] = (HELLO,)) -> Process:
    return Process(
        key,
        "gunicorn + uvicorn-worker",
        app,
        port,
        paths,
        "kill -HUP MASTER",
        "kill -TERM MASTER; start",
        argv_for=lambda b, c: [
            str(b.venv_bin / "gunicorn"),
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            str(b.workers),
            "-b",
            f"127.0.0.1:{c.port}",
            "--chdir",
            b.app_dir,
            *QUIET,
            app_ref,
        ],
        reload_signal=signal.SIGHUP,
    )


def uvicorn_workers(key: str, app: str, port: int, app_ref: str, paths: tuple[str, ...] = (HELLO,)) -> Process:
    return Process(
        key,
        "uvicorn --workers",
        app,
        port,
        paths,
        "kill -HUP MASTER",
        "kill -TERM MASTER; start",
        argv_for=lambda b, c: [
            str(b.venv_bin / "uvicorn"),
            app_ref,
            "--workers",
            str(b.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(c.port),
            "--app-dir",
            b.app_dir,
            "--no-access-log",
            *QUIET,
        ],
        # multiprocessing's spawned children; its resource tracker, if any, is no worker.
        is_worker=lambda cmdline: "spawn_main" in cmdline,
        reload_signal=signal.SIGHUP,
    )


def gunicorn_sync(key: str, app: str, port: int, app_ref: str) -> Process:
    return Process(
        key,
        "gunicorn sync",
        app,
        port,
        (HELLO,),
        "kill -HUP MASTER",
        "kill -TERM MASTER; start",
        argv_for=lambda b, c: [
            str(b.venv_bin / "gunicorn"),
            "-w",
            str(b.workers),
            "-b",
            f"127.0.0.1:{c.port}",
            "--chdir",
            b.app_dir,
            *QUIET,
            app_ref,
        ],
        reload_signal=signal.SIGHUP,
    )
