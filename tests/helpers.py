"""Small shared helpers for the tests: run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sockact(*args: str, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m sockact ARGS` in a fresh interpreter, exactly as the console script would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sockact", *args], capture_output=True, text=True, check=check, env=full_env, timeout=60
    )
