"""`sockact list`: the apps whose units sockact wrote, found in the unit directories, with what systemd
says of their socket and workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ..contract import HEADER, instance_index
from . import DEFAULT_UNIT_DIR, RUNTIME_UNIT_DIR, chosen_unit_dir
from .app import is_ours, wanted_indexes
from .facts import listen_address
from .manage import unit_directory
from .systemctl import Props, show_by_id
from .table import table

LIST_SCHEMA = "sockact-list/1"


def find_apps(directory: Path) -> list[str]:
    """Names of the apps whose NAME.target in directory sockact wrote."""
    return sorted(path.stem for path in directory.glob("*.target") if "@" not in path.stem and is_ours(path))


def _app_entry(name: str, units: dict[str, Props]) -> dict[str, Any]:
    sock, target = units.get(f"{name}.socket", {}), units.get(f"{name}.target", {})
    running = sum(
        1
        for unit, props in units.items()
        if instance_index(name, unit) is not None and props.get("ActiveState") == "active"
    )
    return {
        "app": name,
        "socket": {
            "state": sock.get("ActiveState", "unknown"),
            "sub_state": sock.get("SubState", ""),
            "enabled": sock.get("UnitFileState", ""),
            "listen": [listen_address(line) for line in sock.get("Listen", "").splitlines() if line],
        },
        "target_state": target.get("ActiveState", "unknown"),
        "workers_wanted": len(wanted_indexes(name, target.get("Wants", ""))),
        "workers_running": running,
    }


def _render_list(apps: list[dict[str, Any]]) -> str:
    rows = [
        [
            entry["app"],
            f"{entry['socket']['state']} ({entry['socket']['sub_state']})",
            entry["socket"]["enabled"],
            ", ".join(entry["socket"]["listen"]) or "-",
            f"{entry['workers_running']}/{entry['workers_wanted']}",
            entry["target_state"],
        ]
        for entry in apps
    ]
    return table(["APP", "SOCKET", "ON BOOT", "LISTEN", "WORKERS", "TARGET"], rows) + "\n"


def list_dirs(unit_dir: str | None) -> list[Path]:
    """The directory given, else both places sockact installs to."""
    chosen = unit_dir or chosen_unit_dir()
    if chosen is not None:
        return [unit_directory(chosen)]
    return [Path(path) for path in (DEFAULT_UNIT_DIR, RUNTIME_UNIT_DIR) if Path(path).is_dir()]


def list_apps(*, unit_dir: str | None, as_json: bool, out: TextIO = sys.stdout) -> int:
    directories = list_dirs(unit_dir)
    names = sorted({name for directory in directories for name in find_apps(directory)})
    patterns = [unit for name in names for unit in (f"{name}.socket", f"{name}.target", f"{name}@*.service")]
    props = ("ActiveState", "SubState", "Wants", "Listen", "UnitFileState")
    units = show_by_id(patterns, props) if names else {}
    apps = [_app_entry(name, units) for name in names]
    if as_json:
        out.write(
            json.dumps({"schema": LIST_SCHEMA, "unit_dirs": [str(path) for path in directories], "apps": apps}) + "\n"
        )
    elif not apps:
        where = " or ".join(str(path) for path in directories) or "the unit directories"
        out.write(f"no apps in {where} (units whose first line is '{HEADER} ...')\n")
    else:
        out.write(_render_list(apps))
    return 0
