"""The operator commands' logic against a scripted systemd (sockact.ops.systemctl.runner): no root, no
systemd, milliseconds. What systemd itself does with these calls is tested on a real one in the box."""

from __future__ import annotations

import fnmatch
import subprocess

import pytest

from sockact.errors import SystemdError
from sockact.ops import scale, systemctl
from sockact.ops.app import App


class ScriptedSystemd:
    """Answers `systemctl show` from a table of unit properties, records every other call, and fails a
    `start` of the units listed in broken the way systemctl does."""

    def __init__(self, units: dict[str, dict[str, str]], broken: tuple[str, ...] = ()) -> None:
        self.units = units
        self.broken = broken
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        words = [word for word in argv[1:] if not word.startswith("--no-")]
        if words[0] == "show":
            props = words[1].removeprefix("--property=").split(",")
            names = words[3:]
            blocks = [
                "\n".join(f"{key}={self.units[unit].get(key, '') if key != 'Id' else unit}" for key in props)
                for unit in self.units
                if any(fnmatch.fnmatchcase(unit, pattern) for pattern in names)
            ]
            return subprocess.CompletedProcess(argv, 0, "\n\n".join(blocks) + "\n", "")
        self.calls.append(words)
        if words[0] == "start" and set(words[1:]) & set(self.broken):
            failed = sorted(set(words[1:]) & set(self.broken))[0]
            return subprocess.CompletedProcess(
                argv, 1, "", f"Job for {failed} failed because the control process exited with error code.\n"
            )
        return subprocess.CompletedProcess(argv, 0, "", "")


def web(states: dict[int, str]) -> dict[str, dict[str, str]]:
    return {f"web@{index}.service": {"ActiveState": state} for index, state in states.items()}


APP = App("web", {}, {"Wants": "web@1.service web@2.service", "ActiveState": "active"}, {})


def test_scale_up_starts_only_the_missing_workers() -> None:
    fake = ScriptedSystemd(web({1: "active", 2: "active", 3: "failed"}))
    with systemctl.runner(fake):
        start, stop = scale.apply_live(APP, 4)
    assert (start, stop) == (["web@3.service", "web@4.service"], [])
    assert fake.calls == [["start", "web@3.service", "web@4.service"]]


def test_scale_down_stops_the_highest_first_and_clears_their_failed_state() -> None:
    fake = ScriptedSystemd(web({1: "active", 2: "active", 10: "failed", 3: "activating", 4: "inactive"}))
    with systemctl.runner(fake):
        start, stop = scale.apply_live(APP, 1)
    assert (start, stop) == ([], ["web@2.service", "web@3.service", "web@10.service"])
    assert fake.calls == [
        ["stop", "web@2.service", "web@3.service", "web@10.service"],
        ["reset-failed", "web@2.service", "web@3.service", "web@10.service"],
    ]


def test_a_worker_that_cannot_start_is_one_line_that_points_to_the_logs() -> None:
    fake = ScriptedSystemd(web({1: "active"}), broken=("web@2.service",))
    with systemctl.runner(fake), pytest.raises(SystemdError) as raised:
        scale.apply_live(APP, 2)
    assert str(raised.value) == (
        "web.target now wants 2 workers, but starting them failed: `systemctl start web@2.service` failed: Job for "
        "web@2.service failed because the control process exited with error code.; see `sockact logs web -p warning`"
    )


def test_no_systemd_at_all_is_one_line() -> None:
    def absent(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            argv, 1, "", "System has not been booted with systemd as init system (PID 1)."
        )

    with systemctl.runner(absent), pytest.raises(SystemdError, match="^systemd is not reachable"):
        systemctl.show_by_id(["web.target"], ["ActiveState"])
