"""The Python package as a user gets it: the sdist and the wheel build from a checkout, pass `twine check`,
and the wheel installed into a new venv (made from /usr/bin/python3, as the quick start says) generates
units from the templates it carries."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from helpers import REPO

from sockact import __version__


def test_sdist_and_wheel_build_pass_twine_check_and_the_wheel_works(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # --no-isolation: hatchling from the test venv, so the build needs no download.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheel = dist / f"sockact-{__version__}-py3-none-any.whl"
    sdist = dist / f"sockact-{__version__}.tar.gz"
    assert sorted(path.name for path in dist.iterdir()) == sorted([wheel.name, sdist.name])
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"\n{checked.stdout}", end="")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"sockact-{__version__}.dist-info/entry_points.txt").decode()
    assert {
        "sockact/templates/service.j2",
        "sockact/templates/socket.j2",
        "sockact/templates/target.j2",
        "sockact/py.typed",
        "sockact/runtime/connection.py",
        "sockact/box/boot.sh",
        "sockact/box/launch.sh",
    } <= names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    assert "sockact = sockact.cli:entry" in entry_points
    assert "sockact.testing = sockact.testing" in entry_points  # the pytest plugin (pytest11)
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "README.md",
        "pyproject.toml",
        "templates/service.j2",
        "tests/local/test_python_package.py",
        "packaging/debian/control",
        "scripts/setup",
    } <= members

    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    units = subprocess.run(
        [
            str(venv / "bin" / "sockact"),
            "generate",
            "shop",
            "--app",
            "shop.asgi:app",
            "--listen",
            "8000",
            "--workers",
            "2",
            "--only",
            "service",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert f"ExecStart={venv}/bin/python3 -m sockact run shop.asgi:app" in units.replace("'", "")
