"""Kubernetes from the unit spec: a Deployment, a Service and a PodDisruptionBudget, as one YAML stream.

The spec that renders NAME.socket, NAME@.service and NAME.target renders a pod of the same worker:
one `sockact run` process per pod (the Service balances pods as the shared socket balances workers),
`--bind` instead of systemd's socket, the unit's sandbox as a securityContext, its writable
directories as emptyDir volumes. Options that mean nothing in a pod are refused in one line rather
than dropped. Builds plain dicts and never touches the disk; sockact.generator.yamltext writes them out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import UsageError
from . import yamltext
from .render import Unit, run_options
from .spec import UnitSpec, canonical_seconds, is_number, listen_port, size_bytes

# One worker per pod: with --workers auto, the replicas are not this machine's CPUs (the cluster
# schedules pods on nodes of any size) but the fewest that keep serving while a node is drained.
AUTO_REPLICAS = 2
# runAsUser when --user gives no number: outside every distribution's system and login ranges, and the
# "nonroot" user of distroless images, so files the image gives that user stay readable.
DEFAULT_UID = 65532
# Port of `sockact run --health-listen` in the pod when none is given; the Service does not expose it.
HEALTH_PORT = 9000
# --drain-delay when none is given (lowered to half of --stop-timeout when that is shorter): how long
# the pod keeps serving after SIGTERM while kube-proxy and ingress controllers drop its endpoint.
DRAIN_DELAY = 5.0
# Seconds past the runtime's own deadline before the kubelet's SIGKILL: interpreter exit, and a
# kubelet that counts the grace period from before it sent SIGTERM.
GRACE_MARGIN = 5
STARTUP_SECONDS = 120  # how long an app may take to import and become ready before the kubelet restarts it
CONTAINER_BIND = "0.0.0.0"

_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL_MAX = 63
# The image reference grammar of the container registries' distribution spec (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_REPOSITORY = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(rf"({_REPOSITORY})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
_REPOSITORY_MAX = 255
_SYSTEMD_SUFFIX = re.compile(r"([0-9]+)([KMGT]?)")


@dataclass(frozen=True)
class KubeSpec:
    """The unit spec plus what a pod needs that a unit does not: the image, replicas, numeric ports and UID."""

    unit: UnitSpec
    image: str
    replicas: int
    port: int
    health_port: int
    run_as: int | None  # runAsUser; None: the image's own user (--no-harden without --user)
    memory: str | None  # limits.memory as a Kubernetes quantity

    @property
    def name(self) -> str:
        return self.unit.name


def build(unit: UnitSpec, *, image: str, workers: str, drain_given: bool) -> KubeSpec:
    """Check what a pod cannot carry and add the pod's own values; raises UsageError on the first problem.

    ``workers`` is --workers as typed ('auto' or N); ``drain_given`` says whether --drain-delay was given.
    """
    dns_name(unit.name)
    if unit.exec_argv is not None:
        raise UsageError(
            "sockact kube needs --app: a command given with --exec adopts systemd's socket "
            "(LISTEN_FDS), which no pod passes"
        )
    if unit.env_file is not None:
        raise UsageError(
            f"--env-file {unit.env_file}: a pod cannot read a file of this host; put the variables "
            "in a Secret or ConfigMap and add it with envFrom, or pass them with --env"
        )
    if not drain_given:
        unit = dataclasses.replace(unit, drain_delay=default_drain(unit.stop_timeout))
    port = container_port(unit)
    if unit.health_listen is not None and not unit.health_listen.is_tcp:
        raise UsageError(
            f"--health-listen {unit.health_listen.address}: a pod's probes come over the network; "
            "give a port, e.g. --health-listen 9000"
        )
    health = (listen_port(unit.health_listen) if unit.health_listen is not None else None) or HEALTH_PORT
    if health == port:
        raise UsageError(
            f"the health port {health} is the app's port too; give --health-listen another port, "
            f"e.g. --health-listen {port + 1}"
        )
    replicas = AUTO_REPLICAS if workers == "auto" else unit.workers
    return KubeSpec(
        unit=unit,
        image=image_reference(image),
        replicas=replicas,
        port=port,
        health_port=health,
        run_as=uid(unit),
        memory=memory_quantity(unit.memory_max),
    )


def dns_name(value: str) -> str:
    """A Service's name: an RFC 1035 label, stricter than a unit name."""
    if not _DNS_LABEL.fullmatch(value) or len(value) > _DNS_LABEL_MAX:
        raise UsageError(
            f"name {value!r}: Kubernetes names a Service with lowercase letters, digits and '-', "
            f"starting with a letter, at most {_DNS_LABEL_MAX} characters, e.g. 'myapp'"
        )
    return value


def image_reference(value: str) -> str:
    found = _IMAGE.fullmatch(value)
    if not found or len(found.group(1)) > _REPOSITORY_MAX:
        raise UsageError(
            f"--image {value!r} is not an image reference; write [REGISTRY/]REPOSITORY[:TAG][@DIGEST], "
            "the repository in lowercase, e.g. --image registry.example.com/myapp:1.4.2"
        )
    return value


def default_drain(stop_timeout: str) -> str:
    """DRAIN_DELAY, or half of --stop-timeout when that is shorter, so in-flight requests keep time to finish."""
    seconds = min(DRAIN_DELAY, float(stop_timeout) / 2)
    return canonical_seconds(f"{seconds:.6f}")


def container_port(unit: UnitSpec) -> int:
    """The one TCP port of --listen; its address is the pod's, so only the port is kept."""
    if len(unit.listeners) != 1:
        raise UsageError("sockact kube takes one --listen: a pod serves one port, which its Service forwards to")
    listener = unit.listeners[0]
    if not listener.is_tcp:
        raise UsageError(
            f"--listen {listener.address}: a pod is reached over TCP; give the port the Service "
            "sends to, e.g. --listen 8000"
        )
    return int(listener.address.rsplit(":", 1)[-1])


def uid(unit: UnitSpec) -> int | None:
    """runAsUser: --user as a number, DEFAULT_UID for the sandbox's dynamic user, None without a sandbox."""
    if unit.user is None:
        return DEFAULT_UID if unit.harden else None
    if not is_number(unit.user):
        raise UsageError(
            f"--user {unit.user}: a pod runs as a numeric UID, not a name from this host's "
            f"/etc/passwd; give the number (id -u {unit.user} in the image), or leave --user out "
            f"for UID {DEFAULT_UID}"
        )
    return int(unit.user)


def memory_quantity(value: str | None) -> str | None:
    """systemd's MemoryMax= size as a Kubernetes quantity: K, M, G, T are powers of 1024 there, Ki ... Ti here."""
    if value is None or value == "infinity":
        return None
    if value.endswith("%"):
        raise UsageError(
            f"--memory-max {value}: a pod's memory limit is a size, not a share of whichever node "
            "it lands on; give a size such as 512M (written 512Mi)"
        )
    found = _SYSTEMD_SUFFIX.fullmatch(value)
    assert found is not None and size_bytes(value) is not None  # validated by spec.memory_size
    number, suffix = int(found.group(1)), found.group(2)
    return f"{number}{suffix}i" if suffix else str(number)


def notes(kube: KubeSpec) -> list[str]:
    """One line each for what the manifest does differently from the units, to print on stderr."""
    unit, said = kube.unit, []
    if kube.replicas == 1:
        said.append(
            "note: --workers 1 is one replica: a node drain or an eviction stops the app until the pod "
            "is scheduled again; give --workers 2 or more"
        )
    if unit.state_dir is not None:
        said.append(
            f"note: --state-dir {unit.state_dir} is an emptyDir volume: it lasts as long as the pod and each "
            "replica has its own; mount a PersistentVolumeClaim there for data that must outlive a pod"
        )
    if unit.memory_high is not None:
        said.append(
            "note: --memory-high has no counterpart in a pod spec (memory.high is set only by the alpha "
            "MemoryQoS feature); the manifest leaves it out"
        )
    return said


def labels(kube: KubeSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": kube.name}


def metadata(kube: KubeSpec) -> dict[str, Any]:
    return {"name": kube.name, "labels": {**labels(kube), "app.kubernetes.io/managed-by": "sockact"}}


def command(kube: KubeSpec) -> list[str]:
    """The container's argv: `sockact run` with the unit's runtime options, bound to the pod's address."""
    unit = kube.unit
    assert unit.app is not None
    # The pod's own health address and drain delay replace the unit's.
    own = run_options(dataclasses.replace(unit, health_listen=None, drain_delay=None))
    argv = [
        "sockact",
        "run",
        unit.app,
        "--bind",
        f"{CONTAINER_BIND}:{kube.port}",
        *own,
        "--health-listen",
        f"{CONTAINER_BIND}:{kube.health_port}",
    ]
    if unit.drain_delay and float(unit.drain_delay):
        argv += ["--drain-delay", unit.drain_delay]
    return argv


def grace_seconds(unit: UnitSpec) -> int:
    """terminationGracePeriodSeconds: the drain delay, the stop deadline and a margin, in whole seconds.

    The delay is counted on top of --stop-timeout although the runtime serves it within that deadline:
    a longer grace period costs nothing (the kubelet stops waiting when the process exits) and a shorter
    one would SIGKILL requests still in flight."""
    return math.ceil(float(unit.drain_delay or 0) + float(unit.stop_timeout)) + GRACE_MARGIN


def probes(kube: KubeSpec) -> dict[str, Any]:
    """startup and readiness on /ready; liveness on /live, failing after about --watchdog seconds (none when off)."""
    ready = {"path": "/ready", "port": "health"}
    found: dict[str, Any] = {
        # Liveness and readiness start once the app is ready, so a slow import is not a stuck loop.
        "startupProbe": {"httpGet": ready, "periodSeconds": 2, "failureThreshold": STARTUP_SECONDS // 2},
        "readinessProbe": {"httpGet": ready, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 2},
    }
    if kube.unit.watchdog is not None:
        period = max(1, math.ceil(float(kube.unit.watchdog) / 3))
        found["livenessProbe"] = {
            "httpGet": {"path": "/live", "port": "health"},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        }
    return found


def writable_dirs(kube: KubeSpec) -> list[tuple[str, str, str | None]]:
    """(volume name, mount path, variable naming it) of each directory the pod may write."""
    unit = kube.unit
    dirs: list[tuple[str, str, str | None]] = []
    for volume, root, relative, variable in (
        ("state", "/var/lib", unit.state_dir, "STATE_DIRECTORY"),
        ("cache", "/var/cache", unit.cache_dir, "CACHE_DIRECTORY"),
        ("logs", "/var/log", unit.logs_dir, "LOGS_DIRECTORY"),
    ):
        if relative is not None:
            dirs.append((volume, f"{root}/{relative}", variable))
    if not unit.harden:
        return dirs  # the image's file system stays writable: nothing to open, and nothing to hide under a mount
    dirs.append(("tmp", "/tmp", None))  # PrivateTmp=: a /tmp of the pod's own
    taken = {path for _, path, _ in dirs}
    for index, path in enumerate(unit.writable, start=1):
        if path == "/":
            raise UsageError(
                "--writable /: a pod cannot mount an empty directory over its whole file system; "
                "name the directories the app writes"
            )
        if path not in taken:
            taken.add(path)
            dirs.append((f"writable-{index}", path, None))
    return dirs


def environment(kube: KubeSpec) -> list[dict[str, str]]:
    """STATE_DIRECTORY and friends, as systemd sets them, then --env (which wins on the same name)."""
    values = {variable: path for _, path, variable in writable_dirs(kube) if variable}
    values.update(dict(kube.unit.env))
    return [{"name": key, "value": value} for key, value in values.items()]


def security(kube: KubeSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod's and the container's securityContext: the unit's sandbox, as far as a pod can say it."""
    pod: dict[str, Any] = {} if kube.run_as is None else {"runAsUser": kube.run_as, "runAsGroup": kube.run_as}
    if not kube.unit.harden:
        return pod, {}
    pod = {"runAsNonRoot": True, **pod, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def container(kube: KubeSpec) -> dict[str, Any]:
    unit = kube.unit
    found: dict[str, Any] = {
        "name": kube.name,
        "image": kube.image,
        "command": command(kube),
        "ports": [
            {"name": "http", "containerPort": kube.port, "protocol": "TCP"},
            {"name": "health", "containerPort": kube.health_port, "protocol": "TCP"},
        ],
    }
    if unit.chdir is not None:
        found["workingDir"] = unit.chdir
    if environment(kube):
        found["env"] = environment(kube)
    found.update(probes(kube))
    if kube.memory is not None:
        # The request equals the limit: the scheduler reserves what the kernel enforces.
        found["resources"] = {"requests": {"memory": kube.memory}, "limits": {"memory": kube.memory}}
    _, context = security(kube)
    if context:
        found["securityContext"] = context
    mounts = [{"name": volume, "mountPath": path} for volume, path, _ in writable_dirs(kube)]
    if mounts:
        found["volumeMounts"] = mounts
    return found


def pod_spec(kube: KubeSpec) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if kube.unit.harden:
        found["automountServiceAccountToken"] = False  # the app has no business with the API server
    pod_context, _ = security(kube)
    if pod_context:
        found["securityContext"] = pod_context
    found["terminationGracePeriodSeconds"] = grace_seconds(kube.unit)
    found["containers"] = [container(kube)]
    volumes = [{"name": volume, "emptyDir": {}} for volume, _, _ in writable_dirs(kube)]
    if volumes:
        found["volumes"] = volumes
    return found


def deployment(kube: KubeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(kube),
        "spec": {
            "replicas": kube.replicas,
            "selector": {"matchLabels": labels(kube)},
            # A new pod is ready before an old one goes: the rolling restart of the units, in a cluster.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(kube)}, "spec": pod_spec(kube)},
        },
    }


def service(kube: KubeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(kube),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(kube),
            "ports": [{"name": "http", "port": kube.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(kube: KubeSpec) -> dict[str, Any]:
    """At most a quarter of the pods (at least one) evicted at once, like a rolling update's default 25 %.

    maxUnavailable rather than minAvailable: it stays right when the replicas change, and with one
    replica it lets a node drain finish (minAvailable 1 would block it forever)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(kube),
        "spec": {"maxUnavailable": max(1, kube.replicas // 4), "selector": {"matchLabels": labels(kube)}},
    }


def manifests(kube: KubeSpec) -> list[dict[str, Any]]:
    return [deployment(kube), service(kube), disruption_budget(kube)]


HEADER = f"Generated by sockact {__version__}. Regenerate with `sockact kube` rather than editing."


def render(kube: KubeSpec) -> str:
    """The three objects as one YAML stream, for `kubectl apply -f -`."""
    return yamltext.dump_all(manifests(kube), header=HEADER)


def files(kube: KubeSpec) -> list[Unit]:
    """One file per object, for --output-dir (`kubectl apply -f DIR` takes them all)."""
    names = ("deployment", "service", "pdb")
    return [
        Unit(kind, f"{kube.name}-{kind}.yaml", yamltext.dump_all([document], header=HEADER))
        for kind, document in zip(names, manifests(kube))
    ]
