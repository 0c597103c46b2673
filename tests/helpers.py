"""What tests/unit and tests/systemd share: the repository's paths, the CLI run as a user would, a free listener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The test apps, importable by workers and subprocesses (PYTHONPATH) or copied for a box (shared_apps).
APPS = REPO / "tests" / "apps"


def sockact(*args: str, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m sockact ARGS` in a fresh interpreter, exactly as the console script would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sockact", *args], capture_output=True, text=True, check=check, env=full_env, timeout=60
    )


def free_listener(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A listening TCP socket on a free loopback port, as systemd would pass a worker."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
    sock.listen(128)
    return sock
