"""`sockact generate --container IMAGE`: the podman lines of NAME@.service, and bad input refused in one line
with exit status 2."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import sockact

from sockact.errors import UsageError
from sockact.generator import container, spec

IMAGE = "registry.example.com/team/myapp:1.4"
BASE = [
    "generate",
    "web",
    "--app",
    "myproj.asgi:app",
    "--listen",
    "127.0.0.1:8000",
    "--workers",
    "2",
    "--container",
    IMAGE,
]


def service(*extra: str) -> str:
    result = sockact(*BASE, *extra, "--only", "service", check=True)
    return result.stdout


def setting(text: str, key: str) -> list[str]:
    return [line.partition("=")[2] for line in text.splitlines() if line.startswith(f"{key}=")]


def podman_argv(text: str) -> list[str]:
    (line,) = setting(text, "ExecStart")
    return shlex.split(line)


def test_exec_start_runs_sockact_run_in_the_image_with_the_runtime_options() -> None:
    text = service("--stop-timeout", "12", "--max-requests", "1000", "--access-log")
    argv = podman_argv(text)
    assert argv[:4] == ["/usr/bin/podman", "run", "--name=sockact-web-%i", "--cidfile=%t/sockact-web-%i.cid"]
    image_at = argv.index(IMAGE)
    assert argv[image_at - 1] == "--entrypoint=sockact"
    # The same runtime options a unit without a container gives `python -m sockact`.
    plain = sockact(
        *BASE[:-2], "--stop-timeout", "12", "--max-requests", "1000", "--access-log", "--only", "service", check=True
    ).stdout
    plain_argv = podman_argv(plain)
    assert argv[image_at + 1 :] == plain_argv[plain_argv.index("run") :]
    flags = argv[4:image_at]
    for flag in (
        "--sdnotify=container",
        "--network=none",
        "--cgroups=disabled",
        "--pull=never",
        "--detach",
        "--rm",
        "--replace",
        "--log-driver=passthrough",
        "--ulimit=host",
        "--stop-signal=SIGTERM",
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--user=65534:65534",
        "--env=SOCKACT_APP",
        "--env=SOCKACT_WORKER",
        "--env=WATCHDOG_USEC",
        "--env=JOURNAL_STREAM",
        "--volume=/run/web:/run/sockact",
        "--volume=/run/web/shm:/dev/shm",
        "--env=RUNTIME_DIRECTORY=/run/sockact",
    ):
        assert flag in flags, flag
    # The unit runs podman as root around the container's own sandbox: no User=, no systemd sandbox.
    for key in ("User", "DynamicUser", "ProtectSystem", "RuntimeDirectory", "WorkingDirectory", "EnvironmentFile"):
        assert setting(text, key) == [], key
    assert setting(text, "NotifyAccess") == ["all"] and setting(text, "Type") == ["notify"]
    assert setting(text, "Sockets") == ["web.socket"]


@pytest.mark.parametrize("stop,podman_timeout,timeout_stop", [("30", 31, 36), ("2.5", 4, 9), ("12", 13, 18)])
def test_stop_deadlines_nest_runtime_then_podman_then_systemd(
    stop: str, podman_timeout: int, timeout_stop: int
) -> None:
    text = service("--stop-timeout", stop)
    argv = podman_argv(text)
    assert f"--stop-timeout={podman_timeout}" in argv[: argv.index(IMAGE)]
    runtime = argv[argv.index(IMAGE) :]
    assert runtime[runtime.index("--stop-timeout") + 1] == stop
    assert setting(text, "TimeoutStopSec") == [str(timeout_stop)]
    assert setting(text, "ExecStop") == ["/usr/bin/podman stop --ignore --cidfile=%t/sockact-web-%i.cid"]
    assert setting(text, "ExecStopPost") == ["-/usr/bin/podman rm --force --ignore --cidfile=%t/sockact-web-%i.cid"]
    assert setting(text, "KillMode") == ["mixed"]


def test_options_map_to_podman_flags() -> None:
    text = service(
        "--user",
        "1000:1001",
        "--chdir",
        "/srv/app",
        "--env",
        "A=b c",
        "--env-file",
        "/etc/web.env",
        "--state-dir",
        "web",
        "--cache-dir",
        "web/c",
        "--memory-max",
        "512M",
    )
    flags = podman_argv(text)
    for flag in (
        "--user=1000:1001",
        "--workdir=/srv/app",
        "--env=A",
        "--env-file=/etc/web.env",
        "--volume=/var/lib/web:/var/lib/web",
        "--env=STATE_DIRECTORY=/var/lib/web",
        "--volume=/var/cache/web/c:/var/cache/web/c",
        "--env=CACHE_DIRECTORY=/var/cache/web/c",
    ):
        assert flag in flags, flag
    assert setting(text, "Environment")[1:] == ['"A=b c"']  # podman copies A from the unit's environment
    assert setting(text, "ExecStartPre") == [
        "/usr/bin/install -d -m 0700 -o 1000 -g 1001 /run/web /run/web/shm /var/lib/web /var/cache/web/c",
        "/usr/bin/rm -f %t/sockact-web-%i.cid",
    ]
    assert setting(text, "MemoryMax") == ["512M"]  # the unit's cgroup holds the container (--cgroups=disabled)
    assert setting(text, "StateDirectory") == [] and setting(text, "CacheDirectory") == []


def test_no_harden_drops_the_container_sandbox_and_runs_as_root_inside() -> None:
    flags = podman_argv(service("--no-harden"))
    assert "--user=0:0" in flags
    assert not {"--read-only", "--cap-drop=all", "--security-opt=no-new-privileges"} & set(flags)
    assert "--network=none" in flags  # the socket comes from systemd either way


@pytest.mark.parametrize(
    "reference",
    [
        "myapp",
        "localhost/myapp:latest",
        "registry.example.com:5000/team/my-app_x.y:v1.2-rc",
        "docker.io/library/python:3.11-slim",
        "quay.io/a/b@sha256:" + "a" * 64,
        "ghcr.io/o/r:tag@sha256:" + "0" * 64,
    ],
)
def test_image_references_podman_accepts_are_accepted(reference: str) -> None:
    assert spec.image_reference(reference) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "MyApp",
        "-v",
        "--privileged",
        "my app",
        "a::b",
        "a:tag with space",
        "registry/UPPER/path",
        "a/",
        "/a",
        "a@sha256:short",
        "a:" + "t" * 129,
        "x" * 256,
        "a\nExecStartPre=/bin/sh",
        "a;b",
        "a$(id)",
        "a%i",
    ],
)
def test_malformed_image_references_exit_2_in_one_line(reference: str) -> None:
    result = sockact(*BASE[:-2], f"--container={reference}")
    assert result.returncode == 2, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sockact: --container ") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "extra,says",
    [
        (["--exec", "/usr/bin/true"], "give --app, not --exec"),
        (["--python", "/usr/bin/python3"], "leave --python out"),
        (["--writable", "/srv/data"], "--writable opens host paths"),
        (["--allow-jit"], "--allow-jit lifts MemoryDenyWriteExecute="),
        (["--user", "www-data"], "give a UID or UID:GID"),
        (["--user", "0"], "workers never need root"),
        (["--user", "0:0"], "workers never need root"),
        (["--user", "1:99999999999"], "give a UID or UID:GID"),
    ],
)
def test_options_that_mean_nothing_in_a_container_exit_2_saying_why(extra: list[str], says: str) -> None:
    argv = [*BASE, *extra]
    if extra[0] == "--exec":
        argv.remove("--app")
        argv.remove("myproj.asgi:app")
    result = sockact(*argv)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_a_name_podman_cannot_use_exits_2() -> None:
    result = sockact("generate", "web:v2", "--app", "m:app", "--listen", "8000", "--container", "myapp")
    assert result.returncode == 2
    assert result.stderr == (
        "sockact: name 'web:v2' cannot name a container (sockact-web:v2-N); with --container "
        "use letters, digits and '_.-' only\n"
    )


def test_root_inside_is_allowed_with_no_harden() -> None:
    assert "--user=0:0" in podman_argv(service("--no-harden", "--user", "0"))


def test_container_user_validation_directly() -> None:
    assert spec.container_user("1000") == "1000"
    assert container.user(
        spec.build(
            unit_name="w",
            listen=["8000"],
            python_path="/usr/bin/python3",
            app_ref="m:a",
            container="img",
            run_as="1000",
        )
    ) == ("1000", "1000")
    with pytest.raises(UsageError):
        spec.container_user("1000:")


def test_rendered_container_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    written = sockact(*BASE, "--state-dir", "web", "--output-dir", str(tmp_path), check=True)
    assert written.returncode == 0
    names = sorted(str(path) for path in tmp_path.iterdir())
    analyze = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Unknown key" not in analyze.stderr and "Invalid" not in analyze.stderr, analyze.stderr
    assert "ExecStart" not in analyze.stderr and "ExecStop" not in analyze.stderr, analyze.stderr


def test_explain_describes_the_container_sandbox() -> None:
    result = sockact(*BASE, "--memory-max", "512M", "--explain", check=True)
    assert "the worker runs in a podman container of " + IMAGE in result.stdout
    for flag, _ in container.SANDBOX_FLAGS:
        assert f"\n{flag}\n    " in result.stdout, flag
    assert "MemoryMax=512M" in result.stdout
    assert "(without: " not in result.stdout  # no line of systemd's sandbox, which the unit does not get
