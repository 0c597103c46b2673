"""units/VERSION/EXAMPLE: rendered examples equal what the generator renders for that systemd version,
use only directives that version knows, and systemd-analyze verify is clean on the systemd installed here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, sockact

from sockact.generator import versions

UNITS = REPO / "units"
# Each example and the command that renders it; --systemd-version is added per golden version.
EXAMPLES = {
    "tcp": [
        "myapp",
        "--app",
        "myproj.asgi:application",
        "--listen",
        "8000",
        "--workers",
        "4",
        "--chdir",
        "/srv/myproj",
        "--python",
        "/usr/bin/python3",
        "--watchdog",
        "10",
    ],
    "unix": [
        "sockapp",
        "--app",
        "myproj.wsgi:application",
        "--listen",
        "/run/sockapp/http.sock",
        "--workers",
        "2",
        "--chdir",
        "/srv/myproj",
        "--python",
        "/usr/bin/python3",
        "--env",
        "DJANGO_SETTINGS_MODULE=myproj.settings",
        "--state-dir",
        "sockapp",
    ],
}
GOLDENS = [(version, example) for version in versions.GOLDEN_VERSIONS for example in sorted(EXAMPLES)]


def golden_id(case: tuple[int, str]) -> str:
    return f"{case[0]}/{case[1]}"


def render_into(directory: Path, args: list[str], version: int) -> None:
    result = sockact("generate", *args, "--systemd-version", str(version), "--output-dir", str(directory))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", GOLDENS, ids=golden_id)
def test_golden_units_match_the_generator(case: tuple[int, str], tmp_path: Path) -> None:
    version, example = case
    render_into(tmp_path, EXAMPLES[example], version)
    golden_dir = UNITS / str(version) / example
    if os.environ.get("SOCKACT_UPDATE_GOLDENS") == "1":
        shutil.rmtree(golden_dir, ignore_errors=True)
        shutil.copytree(tmp_path, golden_dir)
    golden = {p.name: p.read_text() for p in golden_dir.iterdir()}
    rendered = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert rendered == golden, (
        f"units/{version}/{example} is stale: rerun with SOCKACT_UPDATE_GOLDENS=1 and review the diff"
    )


def test_every_golden_version_has_a_directory_and_nothing_else_is_there() -> None:
    expected = {f"{version}/{example}" for version, example in GOLDENS}
    found = {f"{d.parent.name}/{d.name}" for d in UNITS.glob("*/*") if d.is_dir()}
    assert found == expected


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every directive line of a unit file."""
    section, found = "", []
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.append((section, key, value))
    return found


def unknown_to(version: int, text: str) -> list[str]:
    """Directives of a unit that systemd `version` does not know, by sockact's version table."""
    problems = []
    for section, key, value in directives(text):
        entry = versions.DIRECTIVES.get(key)
        if entry is None:
            problems.append(f"{key}= is missing from sockact.generator.versions.DIRECTIVES")
        elif entry.section != section:
            problems.append(f"{key}= belongs in [{entry.section}], not [{section}]")
        elif versions.since(key, value) > version:
            problems.append(f"{key}={value} needs systemd {versions.since(key, value)}")
    return problems


@pytest.mark.parametrize("case", GOLDENS, ids=golden_id)
def test_each_golden_uses_only_directives_its_version_knows(case: tuple[int, str]) -> None:
    version, example = case
    for unit in (UNITS / str(version) / example).iterdir():
        assert unknown_to(version, unit.read_text()) == [], unit


def test_the_version_check_can_fail() -> None:
    newest = (UNITS / "257" / "tcp" / "myapp@.service").read_text()
    assert "RestartMode=direct" in newest
    assert "RestartMode=direct needs systemd 254" in unknown_to(252, newest)
    assert "Frobnicate= is missing from sockact.generator.versions.DIRECTIVES" in unknown_to(
        258, "[Service]\nFrobnicate=1\n"
    )


def verify(directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the socket, an instance of the template, and the target."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: install the systemd package (scripts/test does)")
    files = sorted(directory.iterdir())
    template = next(p for p in files if p.name.endswith("@.service"))
    instance = directory / template.name.replace("@.service", "@1.service")
    shutil.copy(template, instance)
    others = [str(p) for p in files if p != template]
    return subprocess.run(
        ["systemd-analyze", "verify", str(instance), *others], capture_output=True, text=True, timeout=60, check=False
    )


def installed_version() -> int:
    detected = versions.running_version()
    assert detected.note is None, detected.note
    return detected.version


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_units_for_the_installed_systemd_verify_clean(example: str, tmp_path: Path) -> None:
    (tmp_path / example).mkdir()
    render_into(tmp_path / example, EXAMPLES[example], installed_version())
    result = verify(tmp_path / example)
    # verify exits 0 on unknown keys, so any word on stderr about our files counts as a failure.
    assert result.returncode == 0 and str(tmp_path) not in result.stderr, result.stderr


@pytest.mark.parametrize("case", GOLDENS, ids=golden_id)
def test_goldens_for_this_systemd_or_older_verify_clean_and_newer_ones_warn(
    case: tuple[int, str], tmp_path: Path
) -> None:
    """The table's boundary, checked against the real parser: what it says 252 lacks, 252 warns about."""
    version, example = case
    shutil.copytree(UNITS / str(version) / example, tmp_path / example)
    result = verify(tmp_path / example)
    if version <= installed_version():
        assert result.returncode == 0 and str(tmp_path) not in result.stderr, result.stderr
    else:
        texts = "".join(p.read_text() for p in (UNITS / str(version) / example).iterdir())
        newer = {key for _, key, value in directives(texts) if versions.since(key, value) > installed_version()}
        assert newer, "a golden newer than this systemd should use something this systemd lacks"
        for key in newer:
            assert f"Unknown key '{key}' in section" in result.stderr, result.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelled directive is reported."""
    shutil.copytree(UNITS / "252" / "tcp", tmp_path / "tcp")
    service = tmp_path / "tcp" / "myapp@.service"
    service.write_text(service.read_text().replace("KillMode=", "KilMode="))
    result = verify(tmp_path / "tcp")
    assert "KilMode" in result.stderr
