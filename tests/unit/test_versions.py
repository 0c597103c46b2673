"""--systemd-version: the version table against the real parser, the default read from systemctl, and what
each version gets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import sockact

from sockact.generator import versions
from sockact.generator.render import render
from sockact.generator.spec import build

APP = ["myapp", "--app", "myproj.asgi:application", "--listen", "8000", "--workers", "2", "--only", "service"]


def service_for(version: int) -> str:
    spec = build(
        unit_name="myapp",
        listen=["8000"],
        python_path="/usr/bin/python3",
        app_ref="a:app",
        worker_count="2",
        systemd_version=version,
    )
    return next(unit.text for unit in render(spec) if unit.kind == "service")


def keys(text: str) -> set[str]:
    return {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}


def test_restart_mode_from_254_on_and_never_a_growing_restart_delay() -> None:
    """RestartSteps= would turn every crash of a serving worker into up to 10 s without it; the
    runtime spaces out failed starts itself (sockact.runtime.boot)."""
    assert {"RestartSteps", "RestartMaxDelaySec", "RestartMode"}.isdisjoint(keys(service_for(253)))
    assert "RestartMode" in keys(service_for(254))
    assert {"RestartSteps", "RestartMaxDelaySec"}.isdisjoint(keys(service_for(257)))


def test_no_start_limit_for_the_runtime_a_limit_for_exec_commands() -> None:
    runtime = service_for(252)
    assert "StartLimitIntervalSec=0\n" in runtime and "StartLimitBurst" not in runtime
    assert "RuntimeDirectory=myapp\nRuntimeDirectoryPreserve=yes\n" in runtime
    assert "LimitNOFILE=524288\n" in runtime
    spec = build(
        unit_name="myapp",
        listen=["8000"],
        python_path="/usr/bin/python3",
        exec_cmd="/usr/bin/myserver",
        worker_count="2",
        systemd_version=257,
    )
    exec_unit = next(unit.text for unit in render(spec) if unit.kind == "service")
    assert "StartLimitIntervalSec=30\n" in exec_unit and "RestartSteps=5\n" in exec_unit


def test_private_ipc_from_248_on_and_the_rest_of_the_sandbox_everywhere() -> None:
    assert "PrivateIPC" not in keys(service_for(247))
    assert "PrivateIPC" in keys(service_for(248))
    assert keys(service_for(247)) | {"PrivateIPC"} == keys(service_for(253))


def test_every_version_renders_only_what_it_knows() -> None:
    for version in range(versions.OLDEST, versions.NEWEST_KNOWN + 1):
        for line in service_for(version).splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert versions.since(key, value) <= version, (version, line)


# A value each directive of the table parses with; the rest take "yes".
SAMPLES = {
    "Description": "probe",
    "PartOf": "probe.target",
    "Wants": "probe.target",
    "After": "probe.target",
    "StartLimitIntervalSec": "30",
    "StartLimitBurst": "10",
    "WantedBy": "multi-user.target",
    "ListenStream": "8000",
    "Accept": "no",
    "DeferAcceptSec": "5",
    "Service": "probe@1.service",
    "Type": "notify",
    "NotifyAccess": "main",
    "Sockets": "probe.socket",
    "ExecStart": "/bin/true",
    "Environment": "A=1",
    "EnvironmentFile": "-/etc/probe.env",
    "WorkingDirectory": "/srv",
    "User": "www-data",
    "Restart": "on-failure",
    "RestartSec": "100ms",
    "RestartSteps": "5",
    "RestartMaxDelaySec": "10s",
    "RestartMode": "direct",
    "OpenFile": "/etc/hostname",
    "WatchdogSec": "10",
    "KillMode": "mixed",
    "TimeoutStopSec": "30",
    "MemoryMax": "512M",
    "MemoryHigh": "400M",
    "SyslogIdentifier": "probe",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictAddressFamilies": "AF_UNIX",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "SystemCallFilter": "@basic-io",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "KeyringMode": "private",
    "StateDirectory": "probe",
    "CacheDirectory": "probe",
    "LogsDirectory": "probe",
    "ReadWritePaths": "/srv",
    "LimitNOFILE": "524288",
    "RuntimeDirectory": "probe",
}


def test_the_table_matches_the_installed_systemd(tmp_path: Path) -> None:
    """What the table says this systemd knows, systemd-analyze verify parses without a word; what it says
    is newer (a directive or one value of it), this systemd warns about."""
    installed = versions.running_version().version
    lines: dict[str, list[str]] = {"Unit": [], "Service": [], "Socket": [], "Install": []}
    for entry_key, entry in versions.DIRECTIVES.items():
        key, has_value, value = entry_key.partition("=")
        lines[entry.section].append(f"{key}={value if has_value else SAMPLES.get(key, 'yes')}")
    service = tmp_path / "probe@1.service"
    service.write_text(
        "".join(
            f"[{section}]\n" + "".join(f"{line}\n" for line in lines[section])
            for section in ("Unit", "Service", "Install")
        )
    )
    (tmp_path / "probe.socket").write_text("[Socket]\n" + "".join(f"{line}\n" for line in lines["Socket"]))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(tmp_path / "probe.socket")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about_ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    unknown = {m.group(1) for line in about_ours for m in [re.search(r"Unknown key '([A-Za-z]+)'", line)] if m}
    newer_keys = {k for k, e in versions.DIRECTIVES.items() if "=" not in k and e.version > installed}
    newer_values = {k.partition("=")[2] for k, e in versions.DIRECTIVES.items() if "=" in k and e.version > installed}
    assert unknown == newer_keys, result.stderr
    others = [line for line in about_ours if "Unknown key" not in line]
    assert all(any(value in line for value in newer_values) for line in others), others
    assert all(any(value in line for line in others) for value in newer_values), others


@pytest.mark.parametrize(
    "output,expected",
    [
        ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT", 252),
        ("systemd 257 (257.9-1)\n", 257),
        ("systemd 255 (255.4-1ubuntu8)\n", 255),
        ("", None),
        ("bash: systemctl: command not found", None),
    ],
)
def test_parse_version_output(output: str, expected: int | None) -> None:
    assert versions.parse_version_output(output) == expected


def test_default_is_the_running_systemd() -> None:
    first = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True).stdout
    running = versions.parse_version_output(first)
    result = sockact("generate", *APP, check=True)
    assert f"for systemd {running}." in result.stdout.splitlines()[0]
    assert result.stderr == ""


def test_without_systemctl_it_renders_for_252_and_says_so(tmp_path: Path) -> None:
    # A PATH with the interpreter's tools but no systemctl.
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    assert shutil.which("systemctl", path=str(bare)) is None
    result = sockact("generate", *APP, env=env)
    assert result.returncode == 0, result.stderr
    assert "for systemd 252." in result.stdout.splitlines()[0]
    assert len(result.stderr.splitlines()) == 1
    assert "--systemd-version" in result.stderr and "252" in result.stderr


def test_explicit_version_wins_and_says_so_in_the_header() -> None:
    result = sockact("generate", *APP, "--systemd-version", "257", check=True)
    assert "for systemd 257." in result.stdout.splitlines()[0]
    assert "RestartMode=direct\n" in result.stdout


@pytest.mark.parametrize("value", ["246", "abc", "25.2", "", "٢٥٢"])
def test_bad_versions_are_one_line_exit_2(value: str) -> None:
    result = sockact("generate", *APP, "--systemd-version", value)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--systemd-version" in result.stderr
