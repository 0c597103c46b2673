"""`sockact install --container IMAGE` under a real (private) systemd with Debian's podman: each worker is a
container that inherits NAME.socket, reports READY through --sdnotify=container, drains on stop, and
is reloaded, scaled and killed like any worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import images
import pytest
from boxutil import Probe, parse_wrk
from helpers import APPS, REPO

from sockact.box import PrivateSystemd

PY = sys.executable
UNIT_DIR = "/run/systemd/system"
APP = "where:app"
PORT = 8470
NAME = "ctr"
# The reload of two container workers takes 4-8 s on two busy cores; one wrk thread leaves them room.
WRK_SECONDS = 10

pytestmark = pytest.mark.skipif(images.podman_missing() is not None, reason=images.podman_missing() or "")


def sockact_in(box: PrivateSystemd, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return box.run(PY, "-m", "sockact", *args, check=check, timeout=180)


@pytest.fixture(scope="module")
def image(private_systemd: PrivateSystemd) -> str:
    """The test image in a podman store of the box's own (a tmpfs, gone with the box)."""
    box = private_systemd
    box.run("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", "/var/lib/containers")
    apps = APPS
    return images.build(box.run, extra_modules={"where.py": apps / "where.py"}, host_path=box.path)


@pytest.fixture(scope="module")
def installed(private_systemd: PrivateSystemd, image: str) -> Iterator[subprocess.CompletedProcess[str]]:
    result = sockact_in(
        private_systemd,
        "install",
        NAME,
        "--app",
        APP,
        "--listen",
        f"127.0.0.1:{PORT}",
        "--workers",
        "2",
        "--container",
        image,
        "--watchdog",
        "3",
        "--stop-timeout",
        "10",
        "--unit-dir",
        UNIT_DIR,
        "--now",
    )
    yield result


def where(box: PrivateSystemd, path: str = "/") -> dict[str, Any]:
    out = box.run("curl", "-sS", "--fail", "--max-time", "10", f"http://127.0.0.1:{PORT}{path}", timeout=20).stdout
    answer: dict[str, Any] = json.loads(out)
    return answer


def answers(box: PrivateSystemd, count: int) -> list[dict[str, Any]]:
    return [where(box) for _ in range(count)]


def running_states(box: PrivateSystemd, workers: int) -> list[str]:
    return [box.show(f"{NAME}@{i}.service", "SubState")["SubState"] for i in range(1, workers + 1)]


def test_install_now_starts_containers_that_answer_through_the_socket(
    private_systemd: PrivateSystemd, image: str, installed: subprocess.CompletedProcess[str]
) -> None:
    box = private_systemd
    out = installed.stdout
    assert f"checked --container {image}: in podman's image store" in out
    assert f"checked --app {APP}: imports in {image}" in out
    assert f"started {NAME}: listening on 127.0.0.1:{PORT}, 2 workers ready in " in out
    status = json.loads(sockact_in(box, "status", NAME, "--json").stdout)
    print(
        f"\nsockact status {NAME} --json: ok={status['ok']}, "
        f"{[(w.get('unit'), w.get('state')) for w in status.get('workers', [])]}"
    )
    assert status["ok"] is True
    assert running_states(box, 2) == ["running", "running"]

    # Sequential connections on a shared socket may all land on one worker for a while (whichever the
    # kernel wakes): ask until both answered, at most 60 times.
    seen = answers(box, 12)
    while {str(answer["worker"]) for answer in seen} != {"1", "2"} and len(seen) < 60:
        seen += answers(box, 4)
    box_hostname = box.run("hostname").stdout.strip()
    hostnames = {str(answer["hostname"]) for answer in seen}
    workers = sorted({str(answer["worker"]) for answer in seen})
    print(
        f"{len(seen)} requests answered by workers {workers} in containers {sorted(hostnames)}; "
        f"PID 1 there: {seen[0]['pid1']}"
    )
    for answer in seen:
        # PID 1 of the answering process's PID namespace is `sockact run` itself: it runs in the container.
        assert answer["pid1"][1:4] == ["/usr/local/bin/sockact", "run", APP]
        assert answer["container"] == "podman" and answer["read_only_root"] is True and answer["uid"] == 65534
    assert {str(answer["worker"]) for answer in seen} == {"1", "2"}
    assert len(hostnames) == 2 and box_hostname not in hostnames

    # The container's processes live in the worker unit's own cgroup (--cgroups=disabled).
    group = box.show(f"{NAME}@1.service", "ControlGroup")["ControlGroup"]
    procs = box.run("cat", f"/sys/fs/cgroup{group}/cgroup.procs").stdout.split()
    commands = [box.run("cat", f"/proc/{pid}/cmdline", check=False).stdout.replace("\0", " ") for pid in procs]
    assert any(command.startswith("/usr/bin/conmon ") for command in commands), commands
    assert any(f"/usr/local/bin/sockact run {APP}" in command for command in commands), commands


def test_reload_under_load_fails_no_request_and_replaces_every_container(
    private_systemd: PrivateSystemd, installed: subprocess.CompletedProcess[str]
) -> None:
    box = private_systemd
    before = {str(answer["hostname"]) for answer in answers(box, 6)}
    wrk = box.popen(
        "wrk",
        "-t1",
        "-c4",
        f"-d{WRK_SECONDS}s",
        "-H",
        "Connection: close",
        f"http://127.0.0.1:{PORT}/sleep?ms=2",
        stdout=subprocess.PIPE,
        text=True,
    )
    probe = Probe(box, PORT, WRK_SECONDS - 1)
    began = time.monotonic()
    reload = sockact_in(box, "reload", NAME)
    took = time.monotonic() - began
    assert wrk.poll() is None, f"reload took {took:.1f} s, longer than the load"
    stats = parse_wrk(wrk.communicate(timeout=WRK_SECONDS + 30)[0])
    seen = probe.result()
    after = {str(answer["hostname"]) for answer in answers(box, 8)}
    failed = sum(stats[key] for key in ("connect", "read", "write", "timeout", "non2xx"))
    restarts = [box.show(f"{NAME}@{i}.service", "NRestarts")["NRestarts"] for i in (1, 2)]
    print(
        f"\nsockact reload {NAME} (2 container workers) in {took:.1f} s under wrk -c4 Connection: close: "
        f"{stats['requests']} requests, {failed} failed ({stats}); probe: {seen}; containers {sorted(before)} -> "
        f"{sorted(after)}; NRestarts {restarts} (WatchdogSec=3)\n{reload.stdout}"
    )
    assert reload.returncode == 0, reload.stderr
    assert failed == 0 and stats["requests"] > 300, stats
    assert seen.answered == seen.total > 40, seen.failures()
    assert len(after) == 2 and not before & after
    assert restarts == ["0", "0"]  # the watchdog's pings crossed podman for the whole run


def test_kill_9_of_a_container_restarts_that_worker_while_the_other_serves(
    private_systemd: PrivateSystemd, installed: subprocess.CompletedProcess[str]
) -> None:
    box = private_systemd
    probe = Probe(box, PORT, 5)
    old = box.show(f"{NAME}@1.service", "MainPID")["MainPID"]
    box.run("podman", "kill", "--signal", "KILL", f"sockact-{NAME}-1")
    box.wait_for(
        lambda: (
            box.show(f"{NAME}@1.service", "MainPID")["MainPID"] not in (old, "0")
            and running_states(box, 2) == ["running", "running"]
        ),
        timeout=30,
        what="worker 1 back",
    )
    seen = probe.result()
    restarts = box.show(f"{NAME}@1.service", "NRestarts")["NRestarts"]
    print(f"\npodman kill -s KILL sockact-{NAME}-1: NRestarts {restarts}; probe: {seen}")
    assert int(restarts) >= 1
    assert seen.answered == seen.total > 20, seen.failures()


def test_scale_adds_and_removes_containers(
    private_systemd: PrivateSystemd, installed: subprocess.CompletedProcess[str]
) -> None:
    box = private_systemd
    sockact_in(box, "scale", NAME, "3")
    box.wait_for(lambda: running_states(box, 3) == ["running"] * 3, timeout=30, what="3 workers")
    names = box.run("podman", "ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(names) == [f"sockact-{NAME}-{i}" for i in (1, 2, 3)]
    sockact_in(box, "scale", NAME, "2")
    box.wait_for(
        lambda: box.show(f"{NAME}@3.service", "ActiveState")["ActiveState"] == "inactive",
        timeout=30,
        what="worker 3 stopped",
    )
    names = box.run("podman", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    print(f"\nsockact scale {NAME} 3 then 2: containers left {sorted(names)}")
    assert sorted(names) == [f"sockact-{NAME}-{i}" for i in (1, 2)]


CONTAINERFILE = REPO / "examples" / "Containerfile"


def containerfile(instruction: str) -> str:
    """The argument of the last INSTRUCTION line of examples/Containerfile."""
    lines = [
        line.split(None, 1)[1] for line in CONTAINERFILE.read_text().splitlines() if line.startswith(instruction + " ")
    ]
    return lines[-1]


def test_containerfile_entrypoint_binds_its_own_port_read_only_non_root_and_drains(
    private_systemd: PrivateSystemd, image: str
) -> None:
    """The example's ENTRYPOINT and USER on the offline image (building the example itself needs its registry
    base image): no socket unit, so `sockact run --bind` listens itself; SIGTERM from `podman stop` drains."""
    box = private_systemd
    entrypoint, user = json.loads(containerfile("ENTRYPOINT")), containerfile("USER")
    port = int(entrypoint[entrypoint.index("--bind") + 1].rpartition(":")[2])
    # Its own service, as a container engine would run it: attached podman, the box's limits passed through.
    box.run(
        "systemd-run",
        "--unit=cfile",
        "-p",
        "LimitNOFILE=524288",
        "--",
        "/usr/bin/podman",
        "run",
        "--name=cfile",
        "--network=host",
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--user={user}",
        "--cgroups=disabled",
        "--ulimit=host",
        f"--entrypoint={json.dumps(entrypoint)}",
        image,
        APP,
    )
    url = f"http://127.0.0.1:{port}"
    box.wait_for(
        lambda: box.run("curl", "-s", "--max-time", "2", url, check=False).returncode == 0,
        timeout=30,
        what="the container's own port",
    )
    answer = json.loads(box.run("curl", "-sS", "--fail", url).stdout)
    assert answer["pid1"][1:] == ["/usr/local/bin/sockact", *entrypoint[1:], APP]
    assert answer["read_only_root"] is True and answer["uid"] == int(user.partition(":")[0])
    slow = box.popen(
        "curl", "-sS", "--fail", "--max-time", "20", f"{url}/sleep?ms=1500", stdout=subprocess.PIPE, text=True
    )
    in_flight = ("ss", "-tnH", "state", "established", f"( dport = :{port} )")
    box.wait_for(lambda: box.run(*in_flight).stdout.strip() != "", what="the slow request's connection")
    began = time.monotonic()
    box.run("podman", "stop", "cfile", timeout=60)
    stopped = time.monotonic() - began
    body, _ = slow.communicate(timeout=30)
    exit_code = box.run("podman", "inspect", "--format", "{{.State.ExitCode}}", "cfile").stdout.strip()
    box.run("podman", "rm", "cfile")
    print(
        f"\nexamples/Containerfile entrypoint {entrypoint} as {user}: answered on :{port}; podman stop with a "
        f"1.5 s request in flight took {stopped:.1f} s, the request got {body.strip()[:40]!r}..., "
        f"exit code {exit_code}"
    )
    assert slow.returncode == 0 and json.loads(body)["pid1"][1] == "/usr/local/bin/sockact"
    assert exit_code == "0" and stopped < 10  # drained and exited, not killed at podman's 10 s


def test_install_refuses_an_image_missing_from_the_store_and_writes_nothing(
    private_systemd: PrivateSystemd, image: str
) -> None:
    box = private_systemd
    missing = "localhost/sockact-absent:1"
    result = sockact_in(
        box,
        "install",
        "absent",
        "--app",
        APP,
        "--listen",
        "127.0.0.1:8471",
        "--container",
        missing,
        "--unit-dir",
        UNIT_DIR,
        check=False,
    )
    print(f"\ninstall --container {missing}: exit {result.returncode}: {result.stderr.strip()}")
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert f"--container {missing} is not in podman's image store; `podman pull {missing}`" in result.stderr
    assert not (box.unit_dir() / "absent@.service").exists()
