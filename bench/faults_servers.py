"""The servers of the fault benchmark, each installed as a user would on a host: systemd units.

sockact runs the units `sockact generate` writes. The others run as one plain service unit each, with
the type and restart policy their docs suggest, so systemd supervises the master process the way it
would on a host; the workers are the master's business (gunicorn's arbiter, uvicorn's supervisor,
the cluster primary, PM2's daemon).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from dataclasses import dataclass, field

from sockact.box import HarnessError

from .contenders import Bench, NotAvailable

WORKERS = 2
# A restart waits out TimeoutStopSec= (90 s by default) when a worker ignores SIGTERM.
OPERATOR_TIMEOUT_S = 150
ASGI_APP = "bench.apps.faults_asgi:app"

# What a user of sockact would pass for these faults, as (option, value, the fault it is for).
# An option this sockact's `generate --help` does not list is left out, and the report says so;
# append options here as sockact grows them.
SOCKACT_OPTIONS: list[tuple[str, str, str]] = [
    ("--request-timeout", "10", "hung handlers: a WSGI worker whose threads are all stuck this long is replaced"),
    ("--max-rss", "200", "memory growth: a worker over 200 MiB recycles itself (as pm2's max_memory_restart 200M)"),
]


@dataclass
class Server:
    """One server under test, on a port of its own inside the box."""

    key: str
    name: str
    port: int
    config: str = ""  # how it ran, for the notes under the table
    operator: str = ""  # what a user types when it stays down
    memory_operator: str = ""  # what a user types to get a grown worker's memory back
    patterns: tuple[str, ...] = ()  # the systemd units its processes run in (regular expressions)

    def install(self, bench: Bench) -> None:
        raise NotImplementedError

    def start(self, bench: Bench) -> None:
        raise NotImplementedError

    def operator_act(self, bench: Bench) -> None:
        """Do what `operator` says."""
        raise NotImplementedError

    def memory_operator_act(self, bench: Bench) -> None:
        """Do what `memory_operator` says."""
        self.operator_act(bench)

    def units(self) -> list[str]:
        raise NotImplementedError

    def stop(self, bench: Bench) -> None:
        """End every process at once (a hung one ignores SIGTERM) and clear failed states for the next fault."""
        units = self.units()
        bench.box.systemctl("kill", "--signal=SIGKILL", *units, check=False)
        bench.box.systemctl("stop", *units, check=False, timeout=60)
        bench.box.systemctl("reset-failed", *units, check=False)

    def worker_pid(self, bench: Bench) -> int:
        """One worker process, as numbered inside the box."""
        raise NotImplementedError

    def rss_mb(self, bench: Bench) -> float:
        """Resident memory of every process in the server's units, in MiB."""
        out = bench.box.run("ps", "-e", "-o", "unit=,rss=").stdout
        total_kb = 0
        for line in out.splitlines():
            unit, _, rss = line.strip().rpartition(" ")
            if any(re.fullmatch(pattern, unit.strip()) for pattern in self.patterns):
                total_kb += int(rss)
        return total_kb / 1024


@dataclass
class Sockact(Server):
    options: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return f"bench-faults-{self.key}"

    def install(self, bench: Bench) -> None:
        sockact = str(bench.venv_bin / "sockact")
        known = subprocess.run([sockact, "generate", "--help"], capture_output=True, text=True, check=False).stdout
        self.options, self.skipped = [], []
        for option, value, _why in SOCKACT_OPTIONS:
            if re.search(rf"{re.escape(option)}\b", known):
                self.options += [option, value]
            else:
                self.skipped.append(option)
        argv = [
            sockact,
            "generate",
            self.unit,
            "--app",
            ASGI_APP,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(WORKERS),
            "--chdir",
            bench.app_dir,
            "--python",
            bench.python,
            *self.options,
            "--output-dir",
            str(bench.box.unit_dir()),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NotAvailable(f"sockact generate failed: {done.stderr.strip()}")
        bench.box.daemon_reload()
        given = " ".join(self.options) or "none"
        self.config = (
            f"`sockact generate` units (Type=notify workers, Restart=on-failure, socket held by "
            f"systemd); options: {given}"
            + (f"; not in this sockact: {', '.join(self.skipped)}" if self.skipped else "")
        )
        self.operator = f"sockact start {self.unit}"
        # `start` leaves running workers alone; the rolling restart replaces them one at a time.
        self.memory_operator = f"sockact reload {self.unit}"
        self.patterns = (rf"{re.escape(self.unit)}@\d+\.service",)

    def units(self) -> list[str]:
        return [
            f"{self.unit}.target",
            f"{self.unit}.socket",
            *(f"{self.unit}@{i}.service" for i in range(1, WORKERS + 1)),
        ]

    def start(self, bench: Bench) -> None:
        bench.box.systemctl("start", f"{self.unit}.socket", f"{self.unit}.target")
        bench.wait_serving(self.port)

    def operator_act(self, bench: Bench) -> None:
        bench.box.run(str(bench.venv_bin / "sockact"), "start", self.unit, check=False, timeout=OPERATOR_TIMEOUT_S)

    def memory_operator_act(self, bench: Bench) -> None:
        bench.box.run(str(bench.venv_bin / "sockact"), "reload", self.unit, check=False, timeout=OPERATOR_TIMEOUT_S)

    def worker_pid(self, bench: Bench) -> int:
        return _main_pid(bench, f"{self.unit}@1.service")


@dataclass
class Plain(Server):
    """One service unit whose main process is the server's own master."""

    body: str = ""  # the [Service] lines after Description
    state_dir: str = ""  # removed after each fault, so the next start is a first one
    worker_mark: str = ""  # in a worker's command line, when the master has other children too

    @property
    def unit(self) -> str:
        return f"bench-faults-{self.key}.service"

    def install(self, bench: Bench) -> None:
        text = f"[Unit]\nDescription={self.name} (fault benchmark)\n\n[Service]\n{self.body}"
        bench.box.write_unit(self.unit, text)
        bench.box.daemon_reload()
        self.operator = self.memory_operator = f"systemctl restart {self.unit.removesuffix('.service')}"
        self.patterns = (re.escape(self.unit),)

    def units(self) -> list[str]:
        return [self.unit]

    def start(self, bench: Bench) -> None:
        bench.box.systemctl("start", self.unit, timeout=90)
        bench.wait_serving(self.port)

    def operator_act(self, bench: Bench) -> None:
        bench.box.systemctl("restart", self.unit, check=False, timeout=OPERATOR_TIMEOUT_S)

    def worker_pid(self, bench: Bench) -> int:
        """A child of the main process: gunicorn's arbiter, uvicorn's supervisor, the cluster primary and
        PM2's daemon fork the workers themselves."""
        master = _main_pid(bench, self.unit)
        for child in bench.box.path(f"/proc/{master}/task/{master}/children").read_text().split():
            cmdline = bench.box.path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if self.worker_mark in cmdline:
                return int(child)
        raise HarnessError(f"{self.name}: no worker among the children of PID {master}")

    def stop(self, bench: Bench) -> None:
        super().stop(bench)
        if self.state_dir:
            bench.box.run("rm", "-rf", self.state_dir)


PM2_HOME = "/run/bench-faults-pm2"


def _main_pid(bench: Bench, unit: str) -> int:
    pid = int(bench.box.show(unit, "MainPID").get("MainPID", "0") or 0)
    if not pid:
        raise HarnessError(f"{unit} has no main process")
    return pid


def pm2_config(bench: Bench, port: int) -> str:
    """An ecosystem file: cluster mode, 2 instances, the documented memory limit."""
    app = {
        "name": "bench-faults",
        "script": str(bench.root / "apps" / "bench" / "apps" / "faults.js"),
        "exec_mode": "cluster",
        "instances": WORKERS,
        "max_memory_restart": "200M",
        "env": {"BENCH_PORT": str(port)},
    }
    return f"module.exports = {{ apps: [{json.dumps(app)}] }};\n"


def lineup(bench: Bench) -> list[Server]:
    venv = bench.venv_bin
    app_dir = bench.app_dir
    node_app = str(bench.root / "apps" / "bench" / "apps" / "faults.js")
    pm2_file = bench.root / "faults" / "pm2.config.js"
    pm2_file.parent.mkdir(exist_ok=True)
    pm2_file.write_text(pm2_config(bench, 8107))
    pm2_file.chmod(0o644)
    return [
        Sockact("sockact", "sockact", 8101),
        Plain(
            "gunicorn",
            "gunicorn + uvicorn-worker",
            8102,
            config="Type=notify unit as in gunicorn's docs (+ Restart=on-failure); "
            "--max-requests 10000 --max-requests-jitter 1000, --timeout 30 (default)",
            body=textwrap.dedent(f"""\
                  Type=notify
                  NotifyAccess=main
                  ExecStart={venv}/gunicorn -k uvicorn_worker.UvicornWorker -w {WORKERS} -b 127.0.0.1:8102 \\
                      --chdir {app_dir} --log-level warning --max-requests 10000 --max-requests-jitter 1000 {ASGI_APP}
                  ExecReload=/bin/kill -s HUP $MAINPID
                  KillMode=mixed
                  TimeoutStopSec=5
                  Restart=on-failure
                  """),
        ),
        Plain(
            "uvicorn",
            "uvicorn --workers",
            8103,
            config="Type=exec unit, Restart=always; uvicorn defaults (its supervisor replaces dead workers)",
            body=textwrap.dedent(f"""\
                  Type=exec
                  ExecStart={venv}/uvicorn {ASGI_APP} --workers {WORKERS} --host 127.0.0.1 --port 8103 \\
                      --app-dir {app_dir} --no-access-log --log-level warning
                  Restart=always
                  """),
            worker_mark="spawn_main",
        ),
        Plain(
            "node",
            "node cluster",
            8106,
            config="Type=exec unit, Restart=always; the primary forks a new worker when one exits",
            body=textwrap.dedent(f"""\
                  Type=exec
                  Environment=BENCH_WORKERS={WORKERS} BENCH_PORT=8106
                  ExecStart=/usr/bin/node {node_app}
                  Restart=always
                  """),
        ),
        Plain(
            "pm2",
            "pm2",
            8107,
            config="the unit `pm2 startup systemd` writes (Type=forking, PIDFile=, LimitNOFILE=infinity, "
            "Restart=on-failure), starting an ecosystem file: cluster mode, 2 instances, "
            "max_memory_restart 200M; app logs go to PM2's files, not the journal",
            body=textwrap.dedent(f"""\
                  Type=forking
                  LimitNOFILE=infinity
                  LimitNPROC=infinity
                  LimitCORE=infinity
                  Environment=PM2_HOME={PM2_HOME}
                  PIDFile={PM2_HOME}/pm2.pid
                  Restart=on-failure
                  ExecStart={bench.pm2} start {pm2_file}
                  ExecReload={bench.pm2} reload all
                  ExecStop={bench.pm2} kill
                  """),
            state_dir=PM2_HOME,
        ),
    ]
