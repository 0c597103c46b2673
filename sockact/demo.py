"""`sockact demo`: the bundled hello app under a real systemd, showing which worker answers each request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Protocol

from .errors import PermissionNeeded, SystemdError
from .generator.render import render
from .generator.spec import build
from .generator.writer import write_units

NAME = "sockact-demo"
APP = "sockact.examples.hello:app"


class Runner(Protocol):
    def __call__(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def _host_runner(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=120)


CLIENTS = textwrap.dedent("""
    import http.client, json, sys, threading
    port, total, parallel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    answers, lock = [], threading.Lock()
    def client(n):
        for _ in range(n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/sleep?ms=20", headers={"Connection": "close"})
            body = conn.getresponse().read().decode().strip()
            with lock:
                answers.append(body)
    threads = [threading.Thread(target=client, args=(total // parallel,)) for _ in range(parallel)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps(answers))
""")


class Demo:
    def __init__(self, run: Runner, unit_dir: Path, port: int, say: Callable[[str], None] = print) -> None:
        self.run, self.unit_dir, self.port, self.say = run, unit_dir, port, say

    def systemctl(self, *args: str) -> str:
        result = self.run("systemctl", *args, check=False)
        if result.returncode != 0 and args[0] not in ("is-active", "show"):
            raise SystemdError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def states(self, workers: int) -> list[str]:
        return [self.systemctl("is-active", f"{NAME}@{i}.service") for i in range(1, workers + 1)]

    def wait_states(self, workers: int, wanted: str, timeout: float = 20) -> float:
        began = time.monotonic()
        while self.states(workers) != [wanted] * workers:
            if time.monotonic() - began > timeout:
                raise SystemdError(
                    f"workers did not become {wanted} within {timeout:.0f} s: see journalctl -u '{NAME}@*'"
                )
            time.sleep(0.05)
        return time.monotonic() - began

    def request(self) -> str:
        out = self.run("curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{self.port}/").stdout
        return out.strip()

    def burst(self, total: int, parallel: int) -> list[str]:
        out = self.run(sys.executable, "-c", CLIENTS, str(self.port), str(total), str(parallel)).stdout
        answers: list[str] = json.loads(out)
        return answers

    def install(self, workers: int) -> None:
        spec = build(
            unit_name=NAME,
            listen=[str(self.port)],
            python_path=sys.executable,
            app_ref=APP,
            worker_count=str(workers),
            stop_timeout="5",
        )
        write_units(render(spec), str(self.unit_dir))
        self.systemctl("daemon-reload")
        self.say(
            f"generated {NAME}.socket, {NAME}@.service, {NAME}.target: {workers} workers of {APP} on port {self.port}"
        )

    def remove(self) -> None:
        self.run("systemctl", "stop", f"{NAME}.target", f"{NAME}.socket", check=False)
        for name in (f"{NAME}.socket", f"{NAME}@.service", f"{NAME}.target"):
            (self.unit_dir / name).unlink(missing_ok=True)
        self.run("systemctl", "daemon-reload", check=False)
        self.say("cleaned up: units stopped and removed")

    def show(self, workers: int, requests: int) -> None:
        self.install(workers)
        self.systemctl("start", f"{NAME}.socket")
        self.say(
            f"$ systemctl start {NAME}.socket   -> listening on :{self.port}; "
            f"workers: {', '.join(self.states(workers))}"
        )
        began = time.monotonic()
        first = self.request()
        self.say(f"first request answered by {first} after {time.monotonic() - began:.2f} s (socket activation)")
        self.wait_states(workers, "active")
        self.say(f"all {workers} workers active {time.monotonic() - began:.2f} s after the first connection")
        self.tally(requests, min(workers * 2, requests))
        self.systemctl("stop", f"{NAME}.target")
        self.say(
            f"$ systemctl stop {NAME}.target    -> workers: {', '.join(self.states(workers))}; "
            f"socket: {self.systemctl('is-active', f'{NAME}.socket')}"
        )
        self.say(f"next request answered by {self.request()} (the socket started the workers again)")

    def tally(self, requests: int, parallel: int) -> None:
        counts = Counter(self.burst(requests, parallel))
        self.say(f"{requests} requests from {parallel} clients at once, each on a new connection:")
        for answer, count in sorted(counts.items()):
            self.say(f"  {answer:<28} {count:>4} requests")


def free_port(run: Runner) -> int:
    listening = run("ss", "-ltnH", check=False).stdout
    for port in range(8640, 8700):
        if f":{port} " not in listening:
            return port
    raise SystemdError("no free TCP port between 8640 and 8699 for the demo")


def run_demo(workers: int = 2, requests: int = 12) -> int:
    if os.geteuid() != 0:
        raise PermissionNeeded("the demo starts units under systemd and needs root: run it with sudo")
    if shutil.which("curl") is None:
        raise SystemdError("the demo needs curl: apt-get install curl")
    if Path("/run/systemd/system").is_dir() and Path("/proc/1/comm").read_text().strip() == "systemd":
        print("systemd is PID 1 here: the demo uses the host's systemd (units in /run/systemd/system)")
        demo = Demo(_host_runner, Path("/run/systemd/system"), free_port(_host_runner))
        try:
            demo.show(workers, requests)
        finally:
            demo.remove()
        return 0
    return _private_demo(workers, requests)


def _private_demo(workers: int, requests: int) -> int:
    from .box import PrivateSystemd, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SystemdError(f"systemd is not PID 1 here and a private one cannot boot: {reason}")
    began = time.monotonic()
    with PrivateSystemd() as box:

        def runner(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return box.run(*argv, check=check, timeout=120)

        version = box.systemd_version()
        print(
            f"systemd is not PID 1 here: booted a private systemd {version} in its own namespaces "
            f"in {time.monotonic() - began:.2f} s"
        )
        Demo(runner, box.unit_dir(), 8000).show(workers, requests)
        print(f"journal of worker 1 (journalctl -u {NAME}@1):")
        for line in box.journal("-u", f"{NAME}@1.service", "-o", "cat").splitlines()[-4:]:
            print(f"  {line}")
    print("private systemd stopped")
    return 0
