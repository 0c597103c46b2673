"""The Debian package: built from packaging/debian, lintian-clean, and working once installed.

The install test boots a private systemd (sockact.box), lays overlays with a tmpfs upper layer
over the box's /usr, /etc and /var, and installs the .deb there with apt from Debian's archive, so
the machine's own package database and files never change. Inside, the packaged /usr/bin/sockact
generates units for a small ASGI app and a small WSGI app, each socket answers 200, and the
package is purged again.

Building needs root (apt-get build-dep installs the build dependencies from Debian) and a Debian
system; elsewhere these tests skip, except in CI, where they must run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import REPO

from sockact import __version__
from sockact.box import PrivateSystemd
from sockact.cli import build_parser

PACKAGING = REPO / "packaging"
DEBIAN = PACKAGING / "debian"
MAN_PAGE = REPO / "docs" / "sockact.1"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# apt and dpkg wait this long for a lock another package operation holds, instead of failing.
APT_OPTIONS = ("-q", "-y", "-o", "DPkg::Lock::Timeout=120")

# Inside the box: the overlaid system directories, where their upper layers live, and the app.
OVERLAID = ("/usr", "/etc", "/var")
SCRATCH = "/run/sockact-pkgtest"
APP_DIR = f"{SCRATCH}/app"
# Both protocols, each answering with the interpreter and the sockact that serve it.
APP = """\
import sys

import sockact

BODY = f"{sys.executable} {sockact.__file__}\\n".encode()
HEADERS = [("content-type", "text/plain"), ("content-length", str(len(BODY)))]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(key.encode(), value.encode()) for key, value in HEADERS]})
    await send({"type": "http.response.body", "body": BODY})


def wsgi(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
"""
# What the apps answer when Debian's python3 runs the packaged sockact.
PACKAGED = "/usr/bin/python3 /usr/lib/python3/dist-packages/sockact/__init__.py\n"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


def _require_debian_root() -> None:
    if os.geteuid() != 0:
        reason = "building and installing the Debian package needs root (apt-get build-dep, dpkg)"
    elif shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        reason = "building the Debian package needs a Debian system (apt-get and dpkg)"
    else:
        return
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _env() -> dict[str, str]:
    # Debian's own tools and interpreter, whatever a developer's PATH puts first.
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}


def _run(
    argv: Sequence[str], *, timeout: float = 300, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, env=_env(), cwd=cwd, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with status {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def _inside(
    box: PrivateSystemd, *argv: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv in the box with a clean environment, as an administrator's shell would."""
    clean = [f"{key}={value}" for key, value in _env().items()]
    return box.run("env", "-i", *clean, *argv, timeout=timeout, check=check)


def _apt_with_fresh_lists(argv: Sequence[str], cwd: Path | None = None) -> None:
    """Run an apt command that reads the package lists; refresh them once if they are missing or stale."""
    if _run(argv, cwd=cwd, check=False).returncode != 0:
        _run(["apt-get", "update", "-q"])
        _run(argv, cwd=cwd)


def _build_dependencies_met() -> bool:
    if shutil.which("dpkg-checkbuilddeps") is None or shutil.which("lintian") is None:
        return False
    return _run(["dpkg-checkbuilddeps", str(DEBIAN / "control")], check=False).returncode == 0


@pytest.fixture(scope="module")
def build_tools() -> None:
    """dpkg-dev, lintian and the build dependencies of packaging/debian/control, from Debian."""
    _require_debian_root()
    if not _build_dependencies_met():
        _run(["apt-get", "update", "-q"])
        _run(["apt-get", "install", *APT_OPTIONS, "dpkg-dev", "lintian"])
        _run(["apt-get", "build-dep", *APT_OPTIONS, str(PACKAGING)])


@pytest.fixture(scope="module")
def deb(build_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb that packaging/build-deb makes of this tree."""
    out = tmp_path_factory.mktemp("deb")
    _run([str(PACKAGING / "build-deb"), str(out)])
    built = sorted(out.glob("sockact_*_all.deb"))
    assert len(built) == 1, f"expected one sockact .deb in {out}, found {[path.name for path in built]}"
    return built[0]


def test_changelog_names_the_package_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"sockact \(([^)-]+)-(\d+)\) \S+; urgency=\w+", first)
    assert match, f"unexpected first changelog line: {first!r}"
    assert match.group(1) == __version__, "add a packaging/debian/changelog entry for the new version"


def test_man_page_documents_every_command() -> None:
    text = MAN_PAGE.read_text()
    parser = build_parser()
    commands = next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    undocumented = [name for name in commands if not re.search(rf"^\.SS {re.escape(name)}$", text, re.MULTILINE)]
    assert not undocumented, f"docs/sockact.1 has no section for: {', '.join(undocumented)}"


def test_build_dependencies_come_from_the_distribution(build_tools: None, tmp_path: Path) -> None:
    # As a developer would do it: debian/ linked at the top of a tree, then apt-get build-dep ./
    # With an empty package status apt must find every one of them, and what they need, in the
    # distribution's archive, whatever this machine has installed already.
    (tmp_path / "debian").symlink_to(DEBIAN)
    _apt_with_fresh_lists(
        ["apt-get", "build-dep", "--simulate", "-q", "-o", "Dir::State::status=/dev/null", "./"], cwd=tmp_path
    )


def test_lintian_reports_no_errors_or_warnings(deb: Path) -> None:
    result = _run(
        ["lintian", "--pedantic", "--info", "--display-experimental", "--fail-on", "error,warning", str(deb)],
        check=False,
    )
    print(result.stdout, end="")
    assert result.returncode == 0, f"lintian found problems:\n{result.stdout}{result.stderr}"
    assert not re.search(r"^[EW]: ", result.stdout, re.MULTILINE), result.stdout


def test_package_metadata_and_contents(deb: Path) -> None:
    fields = {name: _run(["dpkg-deb", "--field", str(deb), name]).stdout.strip() for name in ("Depends", "Recommends")}
    needed = ("python3-uvicorn", "python3-httptools", "python3-jinja2", "python3-systemd", "python3-sdnotify")
    for package in (*needed, "python3-psutil"):
        assert package in fields["Depends"], fields
    # The optional accelerator, and a2wsgi, which Debian 12 does not ship, must not block installing.
    assert "python3-uvloop" in fields["Recommends"] and "python3-uvloop" not in fields["Depends"], fields
    assert "a2wsgi" not in fields["Depends"], fields
    listing = _run(["dpkg-deb", "--contents", str(deb)]).stdout
    for path in (
        "./usr/bin/sockact",
        "./usr/lib/python3/dist-packages/sockact/runtime/main.py",
        "./usr/lib/python3/dist-packages/sockact/templates/service.j2",
        "./usr/share/man/man1/sockact.1.gz",
        "./usr/share/doc/sockact/copyright",
    ):
        assert re.search(rf" {re.escape(path)}$", listing, re.MULTILINE), f"{path} missing from {deb.name}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download_packages(deb: Path, archives: Path) -> None:
    """Fetch the .deb's dependencies that this machine lacks from Debian's archive, into archives."""
    (archives / "partial").mkdir(parents=True)
    command = [
        "apt-get",
        "install",
        "--download-only",
        *APT_OPTIONS,
        "-o",
        f"Dir::Cache::Archives={archives}/",
        "-o",
        "APT::Sandbox::User=root",  # the download directory is root's private temporary directory
        str(deb),
    ]
    _apt_with_fresh_lists(command)


def _overlay_system_directories(box: PrivateSystemd) -> None:
    """From here on, whatever dpkg and apt write in the box lands in tmpfs upper layers."""
    for top in OVERLAID:
        layer = f"{SCRATCH}/layers{top}"
        _inside(box, "mkdir", "-p", f"{layer}/upper", f"{layer}/work")
        _inside(
            box,
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={top},upperdir={layer}/upper,workdir={layer}/work",
            top,
        )


def _package_files(box: PrivateSystemd) -> list[str]:
    listed = _inside(box, "dpkg-query", "--listfiles", "sockact").stdout.splitlines()
    return [path for path in listed if path and not box.path(path).is_dir()]


def _serve(box: PrivateSystemd, name: str, reference: str, port: int) -> None:
    """Units from the packaged sockact for one app, its socket started, one request answered, all stopped."""
    _inside(
        box,
        "/usr/bin/sockact",
        "generate",
        name,
        "--app",
        reference,
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--chdir",
        APP_DIR,
        "--output-dir",
        "/etc/systemd/system",
    )
    service = box.path(f"/etc/systemd/system/{name}@.service").read_text()
    # No --python given: the packaged sockact runs on Debian's interpreter, and so do its workers.
    exec_start = rf"^ExecStart=/usr/bin/python3 -m sockact run {re.escape(reference)}( |$)"
    assert re.search(exec_start, service, re.MULTILINE), service
    _inside(box, "systemctl", "daemon-reload")
    _inside(box, "systemctl", "start", f"{name}.socket")
    # The first connection waits in the socket's backlog while systemd starts the workers.
    answer = _inside(
        box,
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--write-out",
        "%{http_code}",
        f"http://127.0.0.1:{port}/",
        timeout=40,
        check=False,
    )
    if answer.returncode != 0 or answer.stdout != PACKAGED + "200":
        log = box.journal("-q", "-n", "40", "-u", f"{name}@*", "-u", f"{name}.socket")
        raise AssertionError(
            f"{reference}: expected 200 and {PACKAGED!r} from the packaged runtime, got "
            f"{answer.stdout!r} {answer.stderr.strip()!r}; log:\n{log}"
        )
    for instance in (1, 2):
        box.wait_active(f"{name}@{instance}.service", timeout=30)
    _inside(box, "systemctl", "stop", f"{name}.socket", f"{name}.target", timeout=60)


def test_installed_package_serves_and_purges_cleanly(deb: Path, tmp_path: Path, fresh_systemd: PrivateSystemd) -> None:
    box = fresh_systemd
    host_status = _digest(Path("/var/lib/dpkg/status"))
    host_had_sockact = Path("/usr/bin/sockact").exists()
    archives = tmp_path / "archives"
    _download_packages(deb, archives)

    _overlay_system_directories(box)
    _inside(box, "mkdir", "-p", APP_DIR)
    for package in archives.glob("*.deb"):
        shutil.copy(package, box.path(f"/var/cache/apt/archives/{package.name}"))
    shutil.copy(deb, box.path(f"{SCRATCH}/{deb.name}"))
    # The box has no network: apt finds every package it needs in the archive cache.
    _inside(box, "apt-get", "install", *APT_OPTIONS, f"{SCRATCH}/{deb.name}", timeout=300)
    status = _inside(box, "dpkg-query", "--show", "--showformat=${Status}", "sockact").stdout
    assert status == "install ok installed"
    assert _inside(box, "/usr/bin/sockact", "--version").stdout.strip() == f"sockact {__version__}"

    box.path(f"{APP_DIR}/pkgapp.py").write_text(APP)
    for name, reference, port in (("pkgasgi", "pkgapp:asgi", 8080), ("pkgwsgi", "pkgapp:wsgi", 8081)):
        _serve(box, name, reference, port)

    installed = _package_files(box)
    assert "/usr/bin/sockact" in installed
    _inside(box, "apt-get", "purge", *APT_OPTIONS, "sockact", timeout=120)
    assert _inside(box, "dpkg-query", "--show", "sockact", check=False).returncode != 0
    left = [path for path in installed if box.path(path).exists() or box.path(path).is_symlink()]
    assert not left, f"files left after purging sockact: {left}"
    assert not box.path("/usr/lib/python3/dist-packages/sockact").exists(), "byte-code left after purge"
    assert _inside(box, "dpkg", "--audit").stdout == ""

    # All of it happened in the box's upper layers: the machine's packages are as they were.
    assert _digest(Path("/var/lib/dpkg/status")) == host_status
    assert Path("/usr/bin/sockact").exists() == host_had_sockact
