"""The README's "Quick start on a real host", run as a new user would run it, on a real (private) systemd.

The commands are read from the README, not copied here: a change there that breaks the first deploy
breaks this test. Only the placeholders are filled in (the checkout, a FastAPI + Flask project, the
venv's directory), and the lines that need the package index (the venv and pip) run on the host, since
the box has no network; every other line runs inside the box, as root, in a shell, as written. The box
gets its own empty /etc/systemd/system and /usr/local/bin, so the host's are never touched.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO

from sockact.box import PrivateSystemd

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "myproj"
version = "1.0"
dependencies = ["fastapi", "flask"]

[tool.setuptools]
packages = ["myproj"]
"""
ASGI = """\
from fastapi import FastAPI

application = FastAPI()


@application.get("/")
def root() -> dict:
    return {"served_by": "fastapi"}
"""
WSGI = """\
from flask import Flask

application = Flask(__name__)


@application.get("/")
def root():
    return {"served_by": "flask"}
"""


def quick_start_lines() -> list[str]:
    """The shell lines of the first block under "Quick start on a real host", continuations joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start on a real host\n", 1)[1]
    block = section.split("```\n", 2)[1]
    joined = re.sub(r"\\\n\s*", "", block)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


@pytest.fixture
def project() -> Iterator[tuple[Path, Path]]:
    """(the project's directory, the venv's directory), both under /opt and open to the workers."""
    top = Path(tempfile.mkdtemp(prefix="sockact-test-quickstart-", dir="/opt"))
    try:
        source = top / "srv"
        (source / "myproj").mkdir(parents=True)
        (source / "pyproject.toml").write_text(PYPROJECT)
        (source / "myproj" / "__init__.py").write_text("")
        (source / "myproj" / "asgi.py").write_text(ASGI)
        (source / "myproj" / "wsgi.py").write_text(WSGI)
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield source, top / "venv"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_readme_quick_start_serves_a_fastapi_and_a_flask_app(
    private_systemd: PrivateSystemd, project: tuple[Path, Path]
) -> None:
    box = private_systemd
    source, venv = project
    lines = quick_start_lines()
    print("\nthe README's quick start:\n" + "\n".join(f"  {line}" for line in lines))
    assert any(line.startswith("sudo sockact install myapp ") for line in lines), lines
    for mount_point in ("/etc/systemd/system", "/usr/local/bin"):
        box.run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", mount_point)
    box.daemon_reload()

    def filled(line: str, app: str, module: str, port: int) -> str:
        return (
            line.replace("/path/to/sockact", str(REPO))
            .replace("/srv/myproj", str(source))
            .replace("/opt/myproj/venv", str(venv))
            .replace("myproj.asgi:application", module)
            .replace("myapp", app)
            .replace("8000", str(port))
        )

    for app, module, port, served_by in (
        ("myapp", "myproj.asgi:application", 8000, "fastapi"),
        ("myflask", "myproj.wsgi:application", 8001, "flask"),
    ):
        outputs = []
        for line in (filled(line, app, module, port) for line in lines):
            if line.startswith("/usr/bin/python3 -m venv") or "/bin/pip install" in line:
                if app != "myapp":
                    continue  # one venv serves both apps
                result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=900, check=False)
            elif line.startswith("sockact status"):  # "no root needed": run it as nobody
                result = box.run(*NOBODY, "bash", "-c", line, check=False, timeout=120)
            else:
                if line.startswith("sudo ln -s") and app != "myapp":
                    continue
                result = box.run("bash", "-c", line.replace("sudo ", "", 1), check=False, timeout=300)
            assert result.returncode == 0, f"{line}\n-> exit {result.returncode}\n{result.stdout}{result.stderr}"
            outputs.append((line, result.stdout))
        said = dict(outputs)
        install = next(out for line, out in outputs if line.startswith("sudo sockact install"))
        print(f"\n$ sockact install {app} ...\n{install}", end="")
        assert re.search(rf"^started {app}: listening on {port}, \d+ workers ready in ", install, re.MULTILINE)
        assert f"enabled {app}.socket: it starts on boot" in install
        answer = next(out for line, out in said.items() if line.startswith("curl"))
        assert json.loads(answer) == {"served_by": served_by}, answer
        status = next(out for line, out in said.items() if line.startswith("sockact status"))
        print(f"$ sockact status {app}   (as nobody)\n{status}", end="")
        assert f"{app}" in status and "running" in status
        # default hardening: the dynamic user, the sandbox the README's table scores
        assert box.show(f"{app}@1.service", "DynamicUser")["DynamicUser"] == "yes"
