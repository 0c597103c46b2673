"""scripts/setup and scripts/packages: every apt package named before it is installed, no installed
package upgraded, the journal sender from Debian's python3-systemd instead of a build against libsystemd-dev.
apt-get and dpkg-query are stand-ins here; one test asks the real apt-get for a simulation only."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

# --- setup scripts: name packages, never upgrade installed ones ------------------------------------


def _fake_apt(tmp_path: Path, plan: str, installed: tuple[str, ...] = ()) -> dict[str, str]:
    """apt-get and dpkg-query stand-ins on PATH that log their arguments; apt-get -s prints `plan`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (tmp_path / "plan").write_text(plan)
    scripts = {
        "apt-get": f'echo "apt-get $*" >> {log}\ncase " $* " in *" -s "*) cat {tmp_path / "plan"};; esac\n',
        "dpkg-query": f'case " {" ".join(installed)} " in *" ${{@: -1}} "*) echo "install ok installed";; esac\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


UPGRADING = (
    "Inst libsystemd0 [252.38-1~deb12u1] (252.39-1~deb12u2 Debian:12.12/stable [amd64])\n"
    "Inst libsystemd-dev (252.39-1~deb12u2 Debian:12.12/stable [amd64])\n"
)
NEW_ONLY = "Inst python3-systemd (235-1+b2 Debian:12.12/stable [amd64])\nConf python3-systemd (235-1+b2)\n"


def _packages(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts/packages"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_packages_refuses_to_upgrade_installed_ones(tmp_path: Path) -> None:
    env = _fake_apt(tmp_path, UPGRADING)
    result = _packages(env, "libsystemd-dev", "curl")
    assert result.returncode == 1
    assert "would upgrade installed packages: libsystemd0." in result.stderr
    assert "nothing was installed" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [call for call in calls if " install " in call and " -s " not in call] == []
    assert any("-s install --no-upgrade --no-install-recommends libsystemd-dev curl" in call for call in calls)


def test_packages_names_and_allows_an_upgrade_that_leaves_systemd_alone(tmp_path: Path) -> None:
    plan = (
        "Inst libcurl4 [7.88.1-10+deb12u7] (7.88.1-10+deb12u8 Debian:12.12/stable [amd64])\n"
        "Inst curl (7.88.1-10+deb12u8 Debian:12.12/stable [amd64])\n"
    )
    env = _fake_apt(tmp_path, plan)
    result = _packages(env, "curl")
    assert result.returncode == 0, result.stderr
    assert "new packages with their dependencies: curl; upgrading: libcurl4" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[-1] == "apt-get install -y -qq --no-install-recommends curl"


def test_packages_names_what_it_installs_first_and_never_upgrades(tmp_path: Path) -> None:
    env = _fake_apt(tmp_path, NEW_ONLY, installed=("curl",))
    result = _packages(env, "python3-systemd", "curl")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "packages: installing python3-systemd; new packages with their dependencies: python3-systemd"
    )
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "apt-get update -qq"
    assert calls[-1] == "apt-get install -y -qq --no-upgrade --no-install-recommends python3-systemd"
    dry = tmp_path / "dry"
    dry.mkdir()
    env = _fake_apt(dry, NEW_ONLY)
    assert _packages(env, "--dry-run", "python3-systemd").returncode == 0
    assert [call.split()[1] for call in (dry / "calls").read_text().splitlines()] == ["-s"]  # no update, no install


def test_setup_installs_through_packages_and_builds_nothing_against_libsystemd() -> None:
    setup = (REPO / "scripts/setup").read_text()
    assert "libsystemd-dev" not in setup.split("# The journal sender")[0]
    assert re.search(r"^scripts/packages \"\$\{APT_PACKAGES\[@\]\}\"$", setup, re.MULTILINE)
    assert "scripts/packages python3-systemd" in setup and ".[test,systemd]" not in setup
    assert "apt-get install" not in setup
    assert (REPO / "scripts/demo").read_text().count("scripts/setup") == 1
    packages = (REPO / "scripts/packages").read_text()
    assert 'apt-get install -y -qq "${options[@]}"' in packages and "options=(--no-upgrade" in packages


@pytest.mark.skipif(not Path("/usr/bin/apt-get").exists(), reason="needs Debian's apt-get")
def test_the_journal_sender_from_debian_upgrades_nothing_here() -> None:
    """The real apt-get, simulating only: python3-systemd must not pull an upgrade of anything installed."""
    plan = subprocess.run(
        ["apt-get", "-s", "install", "--no-upgrade", "--no-install-recommends", "python3-systemd"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if plan.returncode != 0 and "Unable to locate package" in plan.stderr:
        pytest.skip("python3-systemd is not in this host's package lists (apt-get update)")
    assert plan.returncode == 0, plan.stderr
    print(f"\napt-get -s install python3-systemd:\n{plan.stdout}")
    assert not re.findall(r"^Inst \S+ \[", plan.stdout, re.MULTILINE), plan.stdout
