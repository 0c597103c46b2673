"""Which systemd version knows which unit directive: the one table the generator picks directives from.

Each entry names the first release whose NEWS ("CHANGES WITH N") announces the directive or value;
directives systemd had before sockact's oldest supported release carry that release's number and
say so. A unit rendered for version V uses only entries with ``since <= V``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

OLDEST = 247  # Debian 11; older systemd lacks ProtectProc=/ProcSubset= and is out of support upstream
NEWEST_KNOWN = 258  # the newest release this table was checked against
FALLBACK = 252  # Debian 12 and RHEL 9, assumed when the running systemd cannot be asked
GOLDEN_VERSIONS = (247, 252, 255, 257)  # Debian 11, Debian 12 / RHEL 9, Ubuntu 24.04, Debian 13
RELEASES = {247: "Debian 11", 252: "Debian 12, RHEL 9", 255: "Ubuntu 24.04", 257: "Debian 13"}


@dataclass(frozen=True)
class Since:
    """The systemd release that introduced a directive (or one value of it), and what its NEWS says."""

    version: int
    news: str
    section: str = "Service"


_BASE = "long before v247 (no NEWS entry needed)"

# Keys are "Directive" or "Directive=value" where only that value is newer than the directive.
DIRECTIVES: dict[str, Since] = {
    # [Unit] and [Install]
    "Description": Since(OLDEST, _BASE, "Unit"),
    "PartOf": Since(188, "v188: PartOf=", "Unit"),
    "Wants": Since(OLDEST, _BASE, "Unit"),
    "After": Since(OLDEST, _BASE, "Unit"),
    "WantedBy": Since(OLDEST, _BASE, "Install"),
    "StartLimitIntervalSec": Since(
        229, "v229: StartLimitInterval= and StartLimitBurst= moved from [Service] to [Unit]", "Unit"
    ),
    "StartLimitBurst": Since(229, "v229: StartLimitBurst= moved from [Service] to [Unit]", "Unit"),
    # [Socket]
    "ListenStream": Since(OLDEST, _BASE, "Socket"),
    "Accept": Since(OLDEST, _BASE, "Socket"),
    "Service": Since(OLDEST, _BASE, "Socket"),
    "NoDelay": Since(216, "v216: NoDelay= for TCP sockets", "Socket"),
    "DeferAcceptSec": Since(OLDEST, _BASE, "Socket"),
    "RemoveOnStop": Since(214, "v214: RemoveOnStop=", "Socket"),
    # [Service]: process, notify, crash policy, stop
    "NonBlocking": Since(OLDEST, _BASE),
    "Type": Since(OLDEST, _BASE),
    "Type=notify-reload": Since(253, "v253: Type=notify-reload, reload via signal + RELOADING=1/READY=1"),
    "NotifyAccess": Since(OLDEST, _BASE),
    "Sockets": Since(OLDEST, _BASE),
    "ExecStart": Since(OLDEST, _BASE),
    "Environment": Since(OLDEST, _BASE),
    "EnvironmentFile": Since(OLDEST, _BASE),
    "WorkingDirectory": Since(OLDEST, _BASE),
    "User": Since(OLDEST, _BASE),
    "Restart": Since(OLDEST, _BASE),
    "RestartSec": Since(OLDEST, _BASE),
    "RestartSteps": Since(254, "v254: RestartSteps= with RestartMaxDelaySec=: exponentially growing restart delay"),
    "RestartMaxDelaySec": Since(254, "v254: RestartMaxDelaySec=, the ceiling of that backoff"),
    "RestartMode": Since(254, "v254: RestartMode=direct restarts without passing through failed/inactive"),
    "OpenFile": Since(253, "v253: OpenFile= passes files opened by the manager"),
    "WatchdogSec": Since(207, "v207: WatchdogSec="),
    "KillMode": Since(OLDEST, _BASE),
    "LimitNOFILE": Since(OLDEST, _BASE),
    "RuntimeDirectory": Since(211, "v211: RuntimeDirectory="),
    "RuntimeDirectoryPreserve": Since(235, "v235: RuntimeDirectoryPreserve="),
    "TimeoutStopSec": Since(188, "v188: TimeoutStopSec="),
    "SyslogIdentifier": Since(OLDEST, _BASE),
    "MemoryMax": Since(231, "v231: MemoryMax= (cgroup v2 memory.max; on cgroup v1, memory.limit_in_bytes)"),
    "MemoryHigh": Since(231, "v231: MemoryHigh= (cgroup v2 memory.high; nothing on cgroup v1)"),
    # [Service]: sandbox (see sockact.generator.sandbox)
    "DynamicUser": Since(235, "v235: DynamicUser= complete (introduced v232)"),
    "ProtectSystem": Since(214, "v214: ProtectSystem="),
    "ProtectSystem=strict": Since(232, "v232: ProtectSystem=strict"),
    "ProtectHome": Since(214, "v214: ProtectHome="),
    "ProtectHome=read-only": Since(214, "v214: ProtectHome=read-only"),
    "PrivateTmp": Since(183, "v183: PrivateTmp="),
    "PrivateDevices": Since(209, "v209: PrivateDevices="),
    "PrivateUsers": Since(232, "v232: PrivateUsers="),
    "PrivateMounts": Since(239, "v239: PrivateMounts="),
    "PrivateIPC": Since(248, "v248: PrivateIPC= (own SysV IPC and POSIX message queue namespace)"),
    "ProtectKernelTunables": Since(232, "v232: ProtectKernelTunables="),
    "ProtectKernelModules": Since(232, "v232: ProtectKernelModules="),
    "ProtectKernelLogs": Since(244, "v244: ProtectKernelLogs="),
    "ProtectControlGroups": Since(232, "v232: ProtectControlGroups="),
    "ProtectClock": Since(245, "v245: ProtectClock="),
    "ProtectHostname": Since(242, "v242: ProtectHostname="),
    "ProtectProc": Since(247, "v247: ProtectProc= (hidepid=) on kernels 5.8+"),
    "ProcSubset": Since(247, "v247: ProcSubset=pid"),
    "RestrictAddressFamilies": Since(211, "v211: RestrictAddressFamilies="),
    "RestrictNamespaces": Since(233, "v233: RestrictNamespaces="),
    "RestrictRealtime": Since(231, "v231: RestrictRealtime="),
    "RestrictSUIDSGID": Since(242, "v242: RestrictSUIDSGID="),
    "LockPersonality": Since(235, "v235: LockPersonality="),
    "MemoryDenyWriteExecute": Since(231, "v231: MemoryDenyWriteExecute="),
    "SystemCallArchitectures": Since(209, "v209: SystemCallArchitectures="),
    "SystemCallFilter": Since(209, "v209: SystemCallFilter="),
    "SystemCallFilter=@system-service": Since(231, "v231: the @system-service syscall group"),
    "SystemCallErrorNumber": Since(209, "v209: SystemCallErrorNumber="),
    "CapabilityBoundingSet": Since(OLDEST, _BASE),
    "AmbientCapabilities": Since(229, "v229: AmbientCapabilities="),
    "NoNewPrivileges": Since(OLDEST, _BASE),
    "UMask": Since(OLDEST, _BASE),
    "RemoveIPC": Since(232, "v232: RemoveIPC="),
    "KeyringMode": Since(235, "v235: KeyringMode="),
    "StateDirectory": Since(235, "v235: StateDirectory="),
    "CacheDirectory": Since(235, "v235: CacheDirectory="),
    "LogsDirectory": Since(235, "v235: LogsDirectory="),
    "ReadWritePaths": Since(231, "v231: ReadWritePaths= (renamed from ReadWriteDirectories=)"),
}


def since(key: str, value: str | None = None) -> int:
    """The first version that understands ``key`` (with ``value``, if that value is newer)."""
    if value is not None and f"{key}={value}" in DIRECTIVES:
        return DIRECTIVES[f"{key}={value}"].version
    return DIRECTIVES[key].version


def supports(version: int, key: str, value: str | None = None) -> bool:
    return since(key, value) <= version


@dataclass(frozen=True)
class Detected:
    """The version to render for, and a note for stderr when it was assumed rather than read."""

    version: int
    note: str | None = None


def parse_version_output(text: str) -> int | None:
    """The major version from ``systemctl --version`` ("systemd 252 (252.38-1~deb12u1)")."""
    match = re.match(r"systemd (\d+)", text)
    return int(match.group(1)) if match else None


def running_version() -> Detected:
    """Ask ``systemctl --version``; fall back to FALLBACK (with a note) when systemctl is absent or mute."""
    try:
        out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = parse_version_output(out)
    if found is None:
        return Detected(
            FALLBACK,
            f"note: could not read the systemd version (systemctl --version); "
            f"rendering for systemd {FALLBACK}, pass --systemd-version N to choose",
        )
    return Detected(found)
