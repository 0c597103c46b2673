"""An installed app as systemd sees it: its units, whether sockact wrote them, and its wanted instances."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..contract import HEADER, instance_index, instance_unit, target_unit
from ..errors import NotOursError, PermissionNeeded, UsageError
from ..generator import spec
from .systemctl import Props, show_by_id

UNIT_PROPS = (
    "LoadState",
    "ActiveState",
    "SubState",
    "FragmentPath",
    "Wants",
    "Listen",
    "UnitFileState",
    "NeedDaemonReload",
)


def is_ours(path: str | Path) -> bool:
    """True when the file's first line is the header every sockact-written unit starts with."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().startswith(HEADER)
    except OSError:
        return False


def require_ours(unit: str, path: str | Path) -> None:
    if not is_ours(path):
        raise NotOursError(
            f"{unit} ({path}) was not written by sockact (its first line is not '{HEADER} ...'); "
            "sockact leaves it alone: manage it with systemctl, or remove it and install with sockact"
        )


def require_root(command: str) -> None:
    """Changing units and starting or stopping them needs root; say so before doing anything."""
    if os.geteuid() != 0:
        raise PermissionNeeded(f"{command} changes systemd units and needs root: run `sudo sockact {command} ...`")


def wanted_indexes(name: str, wants: str) -> tuple[int, ...]:
    """The instance numbers in a target's Wants= list, in order."""
    found = (instance_index(name, unit) for unit in wants.split())
    return tuple(sorted(index for index in found if index is not None))


@dataclass(frozen=True)
class App:
    """An app sockact installed: NAME.socket, NAME@.service instances, NAME.target."""

    name: str
    socket: Props
    target: Props
    template: Props  # properties of NAME@1.service, which carry the template's FragmentPath

    @property
    def socket_unit(self) -> str:
        return f"{self.name}.socket"

    @property
    def target_unit(self) -> str:
        return target_unit(self.name)

    def instance(self, index: int) -> str:
        return instance_unit(self.name, index)

    @property
    def wanted(self) -> tuple[int, ...]:
        """Instance numbers NAME.target wants, as systemd has loaded them."""
        return wanted_indexes(self.name, self.target.get("Wants", ""))

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(self.instance(index) for index in self.wanted)

    @property
    def target_path(self) -> str:
        return self.target.get("FragmentPath", "")

    @property
    def running(self) -> bool:
        """The target is up: workers were started (by a connection or by hand) and not stopped since."""
        return self.target.get("ActiveState") in ("active", "activating", "reloading")


def validated_name(name: str) -> str:
    try:
        return spec.name(name)
    except UsageError as exc:
        raise UsageError(f"app {exc}") from None


def resolve(name: str) -> App:
    """The app called name, from systemd; UsageError if unknown, NotOursError if sockact did not write it."""
    validated_name(name)
    units = show_by_id([f"{name}.socket", f"{name}.target", f"{name}@1.service"], UNIT_PROPS)
    target = units.get(f"{name}.target", {})
    if target.get("LoadState") != "loaded":
        state = target.get("LoadState") or "not-found"
        raise UsageError(
            f"unknown app {name!r}: systemd has no {name}.target ({state}); "
            f"see `sockact list`, or install it with `sudo sockact install {name} --app MODULE:ATTR --listen PORT`"
        )
    for unit, props in units.items():
        if props.get("LoadState") == "loaded" and props.get("FragmentPath"):
            require_ours(unit, props["FragmentPath"])
    return App(name, units.get(f"{name}.socket", {}), target, units.get(f"{name}@1.service", {}))
