"""units/: the rendered examples equal what the generator renders, and systemd-analyze verify is clean."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, sockact

UNITS = REPO / "units"
# Each example directory and the command that renders it.
EXAMPLES = {
    "tcp": ["myapp", "--app", "myproj.asgi:application", "--listen", "8000", "--workers", "4",
            "--chdir", "/srv/myproj", "--python", "/usr/bin/python3", "--watchdog", "10"],
    "unix": ["sockapp", "--app", "myproj.wsgi:application", "--listen", "/run/sockapp/http.sock", "--workers", "2",
             "--chdir", "/srv/myproj", "--python", "/usr/bin/python3", "--env", "DJANGO_SETTINGS_MODULE=myproj.settings"],
}


def render_into(directory: Path, args: list[str]) -> None:
    result = sockact("generate", *args, "--output-dir", str(directory))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_golden_units_match_the_generator(example: str, tmp_path: Path) -> None:
    render_into(tmp_path, EXAMPLES[example])
    if os.environ.get("SOCKACT_UPDATE_GOLDENS") == "1":
        shutil.rmtree(UNITS / example, ignore_errors=True)
        shutil.copytree(tmp_path, UNITS / example)
    golden = {p.name: p.read_text() for p in (UNITS / example).iterdir()}
    rendered = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert rendered == golden, f"units/{example} is stale: rerun with SOCKACT_UPDATE_GOLDENS=1 and review the diff"


def verify(directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the socket, an instance of the template, and the target."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: install the systemd package (scripts/test does)")
    files = sorted(directory.iterdir())
    template = next(p for p in files if p.name.endswith("@.service"))
    instance = directory / template.name.replace("@.service", "@1.service")
    shutil.copy(template, instance)
    others = [str(p) for p in files if p != template]
    return subprocess.run(["systemd-analyze", "verify", str(instance), *others],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_golden_units_verify_clean(example: str, tmp_path: Path) -> None:
    shutil.copytree(UNITS / example, tmp_path / example)
    result = verify(tmp_path / example)
    # verify exits 0 on unknown keys, so any word on stderr about our files counts as a failure.
    assert result.returncode == 0 and str(tmp_path) not in result.stderr, result.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelled directive is reported."""
    shutil.copytree(UNITS / "tcp", tmp_path / "tcp")
    service = tmp_path / "tcp" / "myapp@.service"
    service.write_text(service.read_text().replace("KillMode=", "KilMode="))
    result = verify(tmp_path / "tcp")
    assert "KilMode" in result.stderr
