"""Operator commands on installed apps: install, uninstall, list, status, scale, reload, logs, exec.

Every fact comes from systemd (``systemctl show``, the journal), the kernel (/proc) or psutil;
every action goes through ``systemctl``. Nothing here keeps state of its own.
"""

from __future__ import annotations

import os

DEFAULT_UNIT_DIR = "/etc/systemd/system"
RUNTIME_UNIT_DIR = "/run/systemd/system"  # units there last until the next reboot


def chosen_unit_dir() -> str | None:
    """The unit directory the user chose through $SOCKACT_UNIT_DIR, if any."""
    return os.environ.get("SOCKACT_UNIT_DIR") or None


def default_unit_dir() -> str:
    """Where install writes unless --unit-dir or $SOCKACT_UNIT_DIR says otherwise."""
    return chosen_unit_dir() or DEFAULT_UNIT_DIR
