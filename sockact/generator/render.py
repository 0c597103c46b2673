"""Rendering: a UnitSpec becomes unit texts through jinja2 templates (templates/*.j2). Never touches the disk.

Where ExecStart= comes from: exec_start() below, `python -m sockact` followed by run_options(), the
runtime's options in one place (a pod's command in kube.py and a container's in container.py reuse
them); --exec gives the command as it is. context() escapes each value once before any template sees it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..contract import (
    ENV_APP,
    ENV_WORKER,
    HEADER,
    health_socket_unit,
    instance_unit,
    socket_unit,
    target_unit,
    template_unit,
)
from . import container, escape, sandbox, versions
from .spec import UnitSpec, reject_control

KINDS = ("socket", "service", "target", "health-socket")  # health-socket: only with --health-listen
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Unit:
    """One rendered unit file."""

    kind: str
    filename: str
    text: str

    def header(self, unit_dir: str = UNIT_DIR) -> str:
        """The line ``systemctl cat`` prints above a unit."""
        return f"# {unit_dir}/{self.filename}"


def template_dir() -> Path:
    """Templates ship inside the wheel as sockact/templates; a source checkout has them at the top."""
    packaged = Path(str(resources.files("sockact"))) / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


def _finalize(value: Any) -> Any:
    # Defence in depth: whatever reaches a template has been validated and escaped already,
    # but nothing that could start a new line may ever be printed into a unit.
    if isinstance(value, str):
        reject_control("rendered value", value)
    return value


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )


# systemd's own hard limit for services (HIGH_RLIMIT_NOFILE), and its advice: servers that need
# many descriptors raise the soft limit to it.
NOFILE = 524288


def exec_start(spec: UnitSpec) -> list[str]:
    """The worker's command line, unescaped (a container worker's is container.exec_start's)."""
    if spec.exec_argv is not None:
        return list(spec.exec_argv)
    return [spec.python, "-m", "sockact", *runtime_args(spec)]


def runtime_args(spec: UnitSpec) -> list[str]:
    """`run MODULE:ATTR` and the runtime's options: after `python -m sockact`, or after the image's `sockact`."""
    assert spec.app is not None
    return ["run", spec.app, *run_options(spec)]


def run_options(spec: UnitSpec) -> list[str]:
    """`sockact run`'s options after MODULE:ATTR, the same in a unit's ExecStart=, a container's command and a
    pod's command."""
    argv = ["--stop-timeout", spec.stop_timeout, "--request-timeout", spec.request_timeout, "--respawn"]
    if spec.access_log:
        argv.append("--access-log")
    for option, value in (
        ("--max-requests", spec.max_requests),
        ("--max-requests-jitter", spec.max_requests_jitter),
        ("--max-rss", spec.max_rss),
    ):
        if value:
            argv += [option, str(value)]
    if spec.forwarded_allow_ips:
        argv += ["--forwarded-allow-ips", spec.forwarded_allow_ips]
    for limit, text in spec.http_limits:  # only those that differ from the runtime's defaults
        argv += [limit, text]
    if spec.health_listen is not None:
        # The workers serve the fd NAME-health.socket passes (FileDescriptorName=health); the address
        # says where that is, and is what a worker started by hand binds.
        argv += ["--health-listen", spec.health_listen.address]
    if spec.drain_delay:
        argv += ["--drain-delay", spec.drain_delay]
    return argv


def unit_filenames(name: str, health: bool) -> dict[str, str]:
    """The file of each kind of unit an app has: NAME.socket, NAME@.service, NAME.target, NAME-health.socket."""
    names = {"socket": socket_unit(name), "service": template_unit(name), "target": target_unit(name)}
    if health:
        names["health-socket"] = health_socket_unit(name)
    return names


def _container(spec: UnitSpec) -> dict[str, Any] | None:
    """The podman lines of a container worker, escaped by sockact.container; None without --container."""
    if spec.container is None:
        return None
    return {
        "image": spec.container,
        "exec_start_pre": container.exec_start_pre(spec),
        "exec_start": container.exec_start(spec, runtime_args(spec)),
        "exec_stop": container.exec_stop(spec),
        "exec_stop_post": container.exec_stop_post(spec),
        "stop_timeout": container.podman_stop_timeout(spec),
        "timeout_stop_sec": container.timeout_stop_sec(spec),
        "margin": container.PODMAN_STOP_MARGIN,
    }


def context(spec: UnitSpec) -> dict[str, Any]:
    """Every value a template may print, each escaped exactly once here."""
    return {
        "header": HEADER,
        "env_app": ENV_APP,
        "env_worker": ENV_WORKER,
        "version": __version__,
        "name": spec.name,  # validated: unit-name alphabet only, nothing to escape
        "instances": spec.instances,
        "workers": spec.workers,
        "listeners": [{"address": escape.path(item.address), "tcp": item.is_tcp} for item in spec.listeners],
        "any_tcp": any(item.is_tcp for item in spec.listeners),
        "any_unix": any(not item.is_tcp for item in spec.listeners),
        "exec_start": escape.exec_line(exec_start(spec)),
        "chdir": escape.path(spec.chdir) if spec.chdir else None,
        "environment": [escape.quoted(f"{key}={value}") for key, value in spec.env],
        "env_file": escape.path(spec.env_file) if spec.env_file else None,
        "user": spec.run_as,  # validated: [a-z0-9_$-] only, or derived from the validated name
        "sandbox": sandbox.lines(spec),  # fixed words from sockact.generator.sandbox, nothing from the user
        "state_dir": escape.path(spec.state_dir) if spec.state_dir else None,
        "cache_dir": escape.path(spec.cache_dir) if spec.cache_dir else None,
        "logs_dir": escape.path(spec.logs_dir) if spec.logs_dir else None,
        "writable": [escape.path_word(path) for path in spec.writable],
        "systemd_version": spec.systemd_version,
        "backoff": versions.supports(spec.systemd_version, "RestartSteps"),
        "restart_mode": versions.supports(spec.systemd_version, "RestartMode"),
        "watchdog": spec.watchdog,  # validated: digits and one dot
        "stop_timeout": spec.stop_timeout,
        "nofile": NOFILE,
        # validated: digits with one of K/M/G/T, digits and '%', or "infinity"; written as they are, since
        # MemoryMax= expands no specifiers ("50%%" would not parse)
        "memory_max": spec.memory_max if versions.supports(spec.systemd_version, "MemoryMax") else None,
        "memory_high": spec.memory_high if versions.supports(spec.systemd_version, "MemoryHigh") else None,
        "builtin_runtime": spec.exec_argv is None,
        "health": {"address": escape.path(spec.health_listen.address), "tcp": spec.health_listen.is_tcp}
        if spec.health_listen is not None
        else None,
        "container": _container(spec),
    }


def render(spec: UnitSpec) -> list[Unit]:
    env = _environment()
    values = context(spec)
    names = unit_filenames(spec.name, spec.health_listen is not None)
    return [
        render_target(spec.name, spec.workers, spec.systemd_version)
        if kind == "target"
        else Unit(kind, names[kind], env.get_template(f"{kind}.j2").render(values))
        for kind in KINDS
        if kind in names
    ]


def render_target(name: str, workers: int, systemd_version: int) -> Unit:
    """NAME.target alone, which holds the worker count: `generate` writes it with the other units, and
    `sockact scale` writes it again for a new count. The name is a validated app name."""
    values = {
        "header": HEADER,
        "version": __version__,
        "systemd_version": systemd_version,
        "name": name,
        "workers": workers,
        "instances": tuple(instance_unit(name, index) for index in range(1, workers + 1)),
    }
    return Unit("target", target_unit(name), _environment().get_template("target.j2").render(values))


def as_listing(units: list[Unit]) -> str:
    """Every unit under its own ``# /etc/systemd/system/FILE`` header, for a person to review."""
    return "\n".join(f"{unit.header()}\n{unit.text}" for unit in units)
