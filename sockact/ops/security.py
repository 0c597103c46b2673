"""systemd-analyze security, read as a number: the exposure score of a loaded unit (0 sealed .. 10 UNSAFE)."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Callable

Runner = Callable[..., "subprocess.CompletedProcess[str]"]

_OVERALL = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def _host_run(*argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def parse_score(output: str) -> float | None:
    """The overall exposure from systemd-analyze security's text output, None if it has none."""
    match = _OVERALL.search(output)
    return float(match.group(1)) if match else None


def security_score(unit: str, run: Runner | None = None) -> float | None:
    """``systemd-analyze security UNIT``'s overall exposure, e.g. 1.1 for ``myapp@1.service``.

    The unit must be loaded by the running manager (after daemon-reload); for a template, name an
    instance. Returns None when systemd-analyze is missing or cannot reach the manager, so a caller
    such as ``install`` can print the score when there is one and stay quiet otherwise. ``run``
    executes argv (default: on this host); tests pass a private systemd's runner.
    """
    if run is None:
        if shutil.which("systemd-analyze") is None:
            return None
        run = _host_run
    try:
        result = run("systemd-analyze", "security", "--no-pager", unit, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_score(result.stdout)
