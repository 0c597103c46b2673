"""`sockact kube`: manifests valid for the newest three Kubernetes minors, the unit's meaning kept, bad input
refused."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helpers import APPS, sockact
from kubernetes_validate import utils as kv_utils

from sockact.errors import UsageError
from sockact.generator import spec as spec_module
from sockact.generator import yamltext
from sockact.runtime.main import parse as runtime_parse

APP = ["--app", "myproj.asgi:application"]
IMAGE = ["--image", "registry.example.com/team/myapp:1.4.2"]


def newest_minors(count: int = 3) -> list[str]:
    """The newest `count` Kubernetes minor versions whose schemas kubernetes-validate bundles."""
    minors = sorted(
        {kv_utils.major_minor(v) for v in kv_utils.all_versions()},
        key=lambda v: tuple(int(part) for part in v.split(".")),
    )
    return minors[-count:]


VERSIONS = newest_minors()


def kube(*args: str) -> subprocess.CompletedProcess[str]:
    return sockact("kube", "myapp", *APP, *IMAGE, *args)


def documents(*args: str) -> dict[str, dict[str, Any]]:
    result = kube(*args)
    assert result.returncode == 0, result.stderr
    loaded = list(yaml.safe_load_all(result.stdout))
    assert [doc["kind"] for doc in loaded] == ["Deployment", "Service", "PodDisruptionBudget"]
    return {doc["kind"]: doc for doc in loaded}


def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["Deployment"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return pod(docs)["containers"][0]  # type: ignore[no-any-return]


def validate_everywhere(doc: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


SPECS = {
    "minimal": ["--listen", "8000"],
    "everything": [
        "--listen",
        "127.0.0.1:8080",
        "--workers",
        "3",
        "--memory-max",
        "512M",
        "--memory-high",
        "400M",
        "--env",
        "DJANGO_SETTINGS_MODULE=proj.settings",
        "--env",
        "FLAG=yes",
        "--state-dir",
        "myapp",
        "--cache-dir",
        "myapp",
        "--logs-dir",
        "myapp",
        "--writable",
        "/srv/myapp/media",
        "--chdir",
        "/srv/myapp",
        "--user",
        "1000",
        "--max-body",
        "1G",
        "--keep-alive",
        "15",
        "--forwarded-allow-ips",
        "10.0.0.0/8",
        "--max-requests",
        "1000",
        "--max-requests-jitter",
        "100",
        "--max-rss",
        "300",
        "--access-log",
    ],
    "one-replica-no-watchdog": ["--listen", "8000", "--workers", "1", "--watchdog", "0"],
    "no-harden": ["--listen", "8000", "--no-harden"],
    "no-harden-root": ["--listen", "[::]:80", "--no-harden", "--user", "0", "--memory-max", "infinity"],
    "health-and-drain": [
        "--listen",
        "8000",
        "--workers",
        "8",
        "--memory-max",
        "2G",
        "--health-listen",
        "127.0.0.1:9100",
        "--drain-delay",
        "2.5",
        "--stop-timeout",
        "10",
    ],
}


def test_the_versions_are_the_newest_three_bundled() -> None:
    print(
        f"validating against Kubernetes {', '.join(VERSIONS)} (kubernetes-validate {kubernetes_validate.__version__})"
    )
    assert len(VERSIONS) == 3
    assert tuple(int(p) for p in VERSIONS[-1].split(".")) >= (1, 37)


@pytest.mark.parametrize("args", SPECS.values(), ids=SPECS.keys())
def test_every_manifest_is_valid_for_the_newest_three_minors(args: list[str]) -> None:
    docs = documents(*args)
    for doc in docs.values():
        validate_everywhere(doc)
    print(f"{' '.join(args)}: 3 manifests valid (strict) for Kubernetes {', '.join(VERSIONS)}")


def test_strict_validation_has_teeth() -> None:
    """The validator would refuse what a careless emitter writes: an unknown field, a number as text."""
    docs = documents("--listen", "8000")
    misspelled = docs["Deployment"]
    misspelled["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelled, VERSIONS[-1], strict=True)
    as_text = documents("--listen", "8000")["Service"]
    as_text["spec"]["ports"][0]["port"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_text, VERSIONS[-1], strict=True)


def test_output_dir_writes_one_valid_file_per_object(tmp_path: Path) -> None:
    result = kube("--listen", "8000", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = ["myapp-deployment.yaml", "myapp-service.yaml", "myapp-pdb.yaml"]
    assert result.stdout.splitlines() == [f"wrote {tmp_path / name}" for name in names]
    for name in names:
        (doc,) = yaml.safe_load_all((tmp_path / name).read_text())
        validate_everywhere(doc)


def test_service_and_ports_come_from_listen_and_health_listen() -> None:
    docs = documents("--listen", "127.0.0.1:8080", "--health-listen", "9100")
    assert container(docs)["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "health", "containerPort": 9100, "protocol": "TCP"},
    ]
    assert docs["Service"]["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "myapp"}


def test_the_command_carries_the_units_runtime_options() -> None:
    """Between --bind and --health-listen, the pod's argv is ExecStart='s after MODULE:ATTR: one function builds
    both."""
    options = [
        "--max-body",
        "1G",
        "--keep-alive",
        "15",
        "--forwarded-allow-ips",
        "10.0.0.0/8",
        "--max-requests",
        "50",
        "--access-log",
        "--request-timeout",
        "20",
        "--stop-timeout",
        "12",
    ]
    service = sockact("generate", "myapp", *APP, "--listen", "8000", *options, "--only", "service", check=True).stdout
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    unit_argv = shlex.split(exec_start.removeprefix("ExecStart="))
    argv = container(documents("--listen", "8000", *options))["command"]
    assert argv[:5] == ["sockact", "run", "myproj.asgi:application", "--bind", "0.0.0.0:8000"]
    at = argv.index("--health-listen")
    assert argv[5:at] == unit_argv[unit_argv.index("myproj.asgi:application") + 1 :]
    assert argv[at:] == ["--health-listen", "0.0.0.0:9000", "--drain-delay", "5"]


def test_the_command_parses_with_the_runtimes_own_parser() -> None:
    argv = container(
        documents(
            "--listen",
            "8000",
            "--max-body",
            "1G",
            "--head-timeout",
            "20",
            "--max-rss",
            "300",
            "--forwarded-allow-ips",
            "unix,10.0.0.0/8",
            "--stop-timeout",
            "12",
        )
    )["command"]
    # The two options of the runtime's health endpoint, which `sockact run` learns separately; the rest
    # is what this runtime must accept today.
    at = argv.index("--health-listen")
    assert argv[at:] == ["--health-listen", "0.0.0.0:9000", "--drain-delay", "5"]
    args = runtime_parse(argv[2:at])
    assert (args.app, args.bind, args.stop_timeout, args.respawn) == (
        "myproj.asgi:application",
        ["0.0.0.0:8000"],
        12.0,
        True,
    )
    assert (args.max_body, args.head_timeout, args.max_rss) == (1 << 30, 20.0, 300)
    assert args.forwarded_allow_ips.text == argv[argv.index("--forwarded-allow-ips") + 1]


@pytest.mark.parametrize(
    "workers,replicas,budget", [("auto", 2, 1), ("1", 1, 1), ("3", 3, 1), ("8", 8, 2), ("100", 100, 25)]
)
def test_replicas_and_disruption_budget(workers: str, replicas: int, budget: int) -> None:
    result = kube("--listen", "8000", "--workers", workers)
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}
    assert docs["Deployment"]["spec"]["replicas"] == replicas
    assert docs["Deployment"]["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == budget
    assert "minAvailable" not in docs["PodDisruptionBudget"]["spec"]
    assert ("--workers 1 is one replica" in result.stderr) == (replicas == 1)


@pytest.mark.parametrize(
    "args,drain,grace",
    [
        ([], "5", 40),  # the default drain delay: 5 + 30 + 5
        (["--stop-timeout", "6"], "3", 14),  # half of a short stop timeout
        (["--drain-delay", "0"], None, 35),
        (["--drain-delay", "2.5", "--stop-timeout", "10"], "2.5", 18),
    ],
)
def test_grace_period_covers_drain_delay_and_stop_timeout(args: list[str], drain: str | None, grace: int) -> None:
    docs = documents("--listen", "8000", *args)
    argv = container(docs)["command"]
    assert (argv[argv.index("--drain-delay") + 1] if "--drain-delay" in argv else None) == drain
    assert pod(docs)["terminationGracePeriodSeconds"] == grace
    assert "lifecycle" not in container(docs)  # no preStop: the runtime serves through the drain delay


def test_probes_ask_the_health_port_and_liveness_follows_the_watchdog() -> None:
    probes = container(documents("--listen", "8000", "--watchdog", "10"))
    for name, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        assert probes[name]["httpGet"] == {"path": path, "port": "health"}
    live = probes["livenessProbe"]
    period, threshold = live["periodSeconds"], live["failureThreshold"]
    assert period * threshold >= 10 > period * (threshold - 1)
    assert "livenessProbe" not in container(documents("--listen", "8000", "--watchdog", "0"))


@pytest.mark.parametrize(
    "given,quantity",
    [
        ("512M", "512Mi"),
        ("2G", "2Gi"),
        ("1T", "1Ti"),
        ("40000K", "40000Ki"),
        ("600000000", "600000000"),
        ("infinity", None),
    ],
)
def test_memory_max_becomes_the_same_bytes(given: str, quantity: str | None) -> None:
    resources = container(documents("--listen", "8000", "--memory-max", given)).get("resources")
    if quantity is None:
        assert resources is None
        return
    assert resources == {"requests": {"memory": quantity}, "limits": {"memory": quantity}}
    binary = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    suffix = quantity[-2:] if quantity[-2:] in binary else ""
    number = int(quantity[: -len(suffix)] if suffix else quantity)
    assert number * binary.get(suffix, 1) == spec_module.size_bytes(given)


def test_sandbox_becomes_a_restricted_security_context() -> None:
    docs = documents("--listen", "8000")
    assert pod(docs)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod(docs)["automountServiceAccountToken"] is False
    assert container(docs)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod(documents("--listen", "8000", "--user", "1000"))["securityContext"]["runAsUser"] == 1000
    loose = documents("--listen", "8000", "--no-harden")
    assert "securityContext" not in pod(loose) and "securityContext" not in container(loose)
    assert "volumes" not in pod(loose)  # a writable root needs no /tmp volume
    assert pod(documents("--listen", "8000", "--no-harden", "--user", "0"))["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
    }


def test_writable_directories_are_empty_dirs_named_by_their_variables() -> None:
    docs = documents(
        "--listen",
        "8000",
        "--state-dir",
        "myapp/db",
        "--cache-dir",
        "myapp",
        "--logs-dir",
        "myapp",
        "--writable",
        "/srv/myapp/media",
        "--writable",
        "/tmp",
        "--env",
        "CACHE_DIRECTORY=/elsewhere",
    )
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    assert mounts == {
        "/var/lib/myapp/db": "state",
        "/var/cache/myapp": "cache",
        "/var/log/myapp": "logs",
        "/tmp": "tmp",
        "/srv/myapp/media": "writable-1",
    }
    assert pod(docs)["volumes"] == [{"name": name, "emptyDir": {}} for name in mounts.values()]
    env = {item["name"]: item["value"] for item in container(docs)["env"]}
    assert env == {
        "STATE_DIRECTORY": "/var/lib/myapp/db",
        "CACHE_DIRECTORY": "/elsewhere",
        "LOGS_DIRECTORY": "/var/log/myapp",
    }


TRICKY = [
    "yes",
    "no",
    "on",
    "0o10",
    "1e3",
    "null",
    "~",
    "- x",
    "#c",
    "a: b",
    "'",
    '"',
    "\\",
    "é ✓",
    "{x}",
    "*ref",
    "",
    "  padded  ",
    "@",
    "%TAG",
    "0x1F",
]


def test_string_values_stay_strings_whatever_they_look_like() -> None:
    args = [arg for index, value in enumerate(TRICKY) for arg in ("--env", f"V{index}={value}")]
    env = container(documents("--listen", "8000", *args))["env"]
    assert env == [{"name": f"V{index}", "value": value} for index, value in enumerate(TRICKY)]


def test_emitter_round_trips_nested_structures_and_refuses_what_yaml_cannot_carry() -> None:
    doc = {"a": {"b": [{"c": 1, "d": ["x", True, {}]}, {"e": []}], "k.with/slash": "v"}, "empty": {}, "n": 0}
    assert list(yaml.safe_load_all(yamltext.dump_all([doc, {"z": "w"}], header="one\ntwo"))) == [doc, {"z": "w"}]
    for bad in ("\udcff", "\ufeff", "\uffff"):
        with pytest.raises(UsageError, match="a YAML manifest cannot carry"):
            yamltext.dump_all([{"v": bad}])


BAD = [
    (
        [*APP, "--listen", "8000"],
        "sockact kube: the following arguments are required: --image (see sockact kube --help)",
    ),
    (
        [*APP, "--listen", "8000", "--image", "Registry.example.com/MyApp:1"],
        (
            "sockact: --image 'Registry.example.com/MyApp:1' is not an image reference; write "
            "[REGISTRY/]REPOSITORY[:TAG][@DIGEST], the repository in lowercase, "
            "e.g. --image registry.example.com/myapp:1.4.2"
        ),
    ),
    ([*APP, "--listen", "8000", "--image", "myapp:1.0:2"], "sockact: --image 'myapp:1.0:2' is not an image reference"),
    ([*APP, "--listen", "8000", "--image", "my app"], "sockact: --image 'my app' is not an image reference"),
    (
        [*APP, "--listen", "8000", *IMAGE, "--memory-max", "25%"],
        (
            "sockact: --memory-max 25%: a pod's memory limit is a size, not a share of whichever node it lands on; "
            "give a size such as 512M (written 512Mi)"
        ),
    ),
    (
        [*APP, "--listen", "8000", *IMAGE, "--drain-delay", "30"],
        (
            "sockact: --drain-delay 30 is not below --stop-timeout 30: the delay counts inside the stop timeout and "
            "the drain needs the rest; lower it or raise --stop-timeout"
        ),
    ),
    (
        [*APP, "--listen", "8000", *IMAGE, "--drain-delay", "8", "--stop-timeout", "5"],
        "sockact: --drain-delay 8 is not below --stop-timeout 5",
    ),
    (
        ["--exec", "/usr/bin/server", "--listen", "8000", *IMAGE],
        (
            "sockact: sockact kube needs --app: a command given with --exec adopts systemd's socket (LISTEN_FDS), "
            "which no pod passes"
        ),
    ),
    (
        [*APP, "--listen", "/run/myapp.sock", *IMAGE],
        (
            "sockact: --listen /run/myapp.sock: a pod is reached over TCP; give the port the Service sends to, "
            "e.g. --listen 8000"
        ),
    ),
    ([*APP, "--listen", "8000", "--listen", "8001", *IMAGE], "sockact: sockact kube takes one --listen"),
    (
        [*APP, "--listen", "8000", *IMAGE, "--user", "www-data"],
        (
            "sockact: --user www-data: a pod runs as a numeric UID, not a name from this host's /etc/passwd; give the "
            "number "
            "(id -u www-data in the image), or leave --user out for UID 65532"
        ),
    ),
    (
        [*APP, "--listen", "8000", *IMAGE, "--env-file", "/etc/myapp.env"],
        "sockact: --env-file /etc/myapp.env: a pod cannot read a file of this host",
    ),
    (
        [*APP, "--listen", "9000", *IMAGE],
        (
            "sockact: the health port 9000 is the app's port too; give --health-listen another port, "
            "e.g. --health-listen 9001"
        ),
    ),
    ([*APP, "--listen", "8000", *IMAGE, "--writable", "/"], "sockact: --writable /: a pod cannot mount"),
    (
        [*APP, "--listen", "8000", *IMAGE, "--health-listen", "/run/h.sock"],
        (
            "sockact: --health-listen /run/h.sock: a pod's probes come over the network; give a port, e.g. "
            "--health-listen 9000"
        ),
    ),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m.removeprefix("sockact: ")[:40] for _, m in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    result = sockact("kube", "myapp", *args, "--output-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert list(tmp_path.iterdir()) == []


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "reference,valid",
    [
        ("nginx", True),
        ("nginx:1.25-alpine", True),
        ("localhost:5000/app:tag", True),
        ("ghcr.io/org/sub/app:v1.2.3", True),
        (f"app@{DIGEST}", True),
        (f"registry.example.com:443/a_b/c__d/e-f:latest@{DIGEST}", True),
        ("app:", False),
        ("app:-x", False),
        ("ghcr.io/Org/app", False),
        ("app@sha256:abc", False),
        ("a" * 256, False),
        ("/app", False),
        ("app//x", False),
        ("app:tag\n", False),
    ],
)
def test_image_references_follow_the_distribution_grammar(reference: str, valid: bool) -> None:
    from sockact.generator import kube

    if valid:
        assert kube.image_reference(reference) == reference
    else:
        with pytest.raises(UsageError, match="is not an image reference"):
            kube.image_reference(reference)


def test_a_name_kubernetes_refuses_is_refused() -> None:
    result = sockact("kube", "My_App", *APP, "--listen", "8000", *IMAGE)
    assert result.returncode == 2
    assert result.stderr == (
        "sockact: name 'My_App': Kubernetes names a Service with lowercase letters, "
        "digits and '-', starting with a letter, at most 63 characters, e.g. 'myapp'\n"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_status(port: int, path: str) -> int | None:
    """The status of GET path on 127.0.0.1:port, None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return None
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None


def pod_command_on_loopback(argv: list[str], app_port: int, health_port: int) -> list[str]:
    """The manifest's argv with the venv's sockact and loopback ports instead of the pod's 0.0.0.0."""
    swapped = {"--bind": f"127.0.0.1:{app_port}", "--health-listen": f"127.0.0.1:{health_port}"}
    local = [str(Path(sys.executable).parent / "sockact"), *argv[1:]]
    for option, address in swapped.items():
        local[local.index(option) + 1] = address
    return local


def test_the_readiness_probe_answers_200_when_the_pods_command_runs_here(tmp_path: Path) -> None:
    """The container's command, run for real: the probes' path and port answer as the manifest expects.

    Needs `sockact run --health-listen` and `--drain-delay` (the runtime's health endpoint); until the
    runtime has them this fails, naming that reason."""
    rendered = sockact(
        "kube",
        "myapp",
        "--app",
        "wsgi_hello:application",
        *IMAGE,
        "--listen",
        "8000",
        "--drain-delay",
        "2",
        "--stop-timeout",
        "10",
        check=True,
    ).stdout
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered)}
    probe = container(docs)["readinessProbe"]["httpGet"]
    assert probe["port"] == "health"
    app_port, health_port = free_port(), free_port()
    argv = pod_command_on_loopback(container(docs)["command"], app_port, health_port)
    systemds = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC")
    env = {k: v for k, v in os.environ.items() if k not in systemds}
    env["PYTHONPATH"] = str(APPS)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        status = wait_for_status(proc, health_port, probe["path"], log)
        assert status == 200
        assert http_status(app_port, "/") == 200
        proc.send_signal(signal.SIGTERM)
        # The drain delay: the probe says 503 while the app port keeps serving.
        assert wait_for_status(proc, health_port, probe["path"], log, want=503) == 503
        assert http_status(app_port, "/") == 200
        print(f"{probe['path']} on the health port: 200 while serving, 503 after SIGTERM with the app still answering")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)


def wait_for_status(proc: subprocess.Popen[bytes], port: int, path: str, log: Path, want: int = 200) -> int | None:
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        status = http_status(port, path)
        if status == want:
            return status
        if proc.poll() is not None:
            said = log.read_text(errors="replace").strip().splitlines()
            pytest.fail(
                f"`sockact run` exited {proc.returncode} on the manifest's command: "
                f"{said[-1] if said else ''}; "
                "the runtime has no health endpoint yet (--health-listen and --drain-delay come with the "
                "runtime's health checks), so the pod's probes would find nothing to ask"
            )
        time.sleep(0.05)
    return status
