"""Small CLI behaviours a first user meets: `sockact run --help`, plain `sockact`, a port out of range,
the hint of `sockact generate` to a pipe (and the three `tee` lines it prints, run as printed), and the
directories `uninstall` keeps."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from helpers import sockact

from sockact.box import PrivateSystemd
from sockact.ops.manage import kept_directories

# --- small CLI fixes -------------------------------------------------------------------------------


def _console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """`sockact ARGS` through the console script's entry (cli.entry), not `python -m sockact`."""
    code = "import sys\nfrom sockact.cli import entry\nsys.argv = ['sockact', *sys.argv[1:]]\nentry()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False)


def test_run_help_works_through_the_console_script() -> None:
    result = _console_script("run", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sockact run") and "--max-requests" in result.stdout
    bad = _console_script("run", "m:app", "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_plain_sockact_prints_the_help_and_exits_2() -> None:
    result = _console_script()
    assert result.returncode == 2
    assert result.stdout.startswith("usage: sockact") and "generate" in result.stdout and "status" in result.stdout


def test_a_port_out_of_range_says_so() -> None:
    result = sockact("generate", "web", "--app", "m:app", "--listen", "99999")
    assert result.returncode == 2
    assert result.stderr.strip() == "sockact: --listen '99999': port 99999 is out of range (1-65535)"
    host = sockact("generate", "web", "--app", "m:app", "--listen", "127.0.0.1:0")
    assert "port 0 is out of range (1-65535)" in host.stderr
    word = sockact("generate", "web", "--app", "m:app", "--listen", "127.0.0.1:http")
    assert "is not a number" in word.stderr


# --- generate | tee --------------------------------------------------------------------------------


def test_generate_to_a_pipe_says_how_to_split_and_the_three_tee_lines_work(tmp_path: Path) -> None:
    options = ["generate", "web", "--app", "m:app", "--listen", "8000", "--workers", "2", "--python", sys.executable]
    piped = sockact(*options)  # stdout is a pipe here
    assert piped.returncode == 0 and piped.stdout.count("[Unit]") == 3
    lines = piped.stderr.splitlines()
    assert lines[0].startswith("sockact: stdout holds three units in one listing")
    tees = [line.strip() for line in lines if " | sudo tee /etc/systemd/system/" in line]
    assert [line.split()[-2].rsplit("/", 1)[1] for line in tees] == ["web.socket", "web@.service", "web.target"]
    assert any(
        line.startswith("or all three at once: sudo sockact generate ")
        and line.endswith("--output-dir /etc/systemd/system")
        for line in lines
    )
    # Run the three lines as printed, writing to a scratch directory instead of /etc and without sudo.
    written = tmp_path / "tee"
    written.mkdir()
    for line in tees:
        command = line.replace("sudo tee /etc/systemd/system/", f"tee {written}/")
        command = f"{shlex.quote(sys.executable)} -m {command}"  # `sockact ...` as the console script would
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and done.stderr == "", done.stderr  # --only: no hint
    reference = tmp_path / "dir"
    reference.mkdir()
    assert sockact(*options, "--output-dir", str(reference)).returncode == 0
    names = sorted(path.name for path in reference.iterdir())
    assert sorted(path.name for path in written.iterdir()) == names == ["web.socket", "web.target", "web@.service"]
    for name in names:
        assert (written / name).read_text() == (reference / name).read_text(), name
    analyze = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(written / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unknown section" not in analyze.stderr and "Unknown key" not in analyze.stderr, analyze.stderr


# --- uninstall keeps the app's data ----------------------------------------------------------------


def test_uninstall_names_the_directories_it_keeps(tmp_path: Path) -> None:
    (tmp_path / "var/lib/private/web").mkdir(parents=True)
    (tmp_path / "var/lib/web").symlink_to("private/web")  # what DynamicUser= makes
    (tmp_path / "var/log/web").mkdir(parents=True)
    props = {"StateDirectory": "web", "CacheDirectory": "web", "LogsDirectory": "web"}
    kept = kept_directories(props, root=tmp_path)
    assert [(str(path.relative_to(tmp_path)), what) for path, what in kept] == [
        ("var/lib/private/web", f"StateDirectory=, the app's data, linked from {tmp_path}/var/lib/web"),
        ("var/log/web", "LogsDirectory=, its log files"),
    ]
    assert kept_directories({}, root=tmp_path) == []


def test_uninstall_says_which_state_directory_it_kept(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    name = "keepsdata"  # its state lands in the host's /var/lib (the box shares it): removed below
    installed = box.run(
        sys.executable,
        "-m",
        "sockact",
        "install",
        name,
        "--app",
        "sockact.examples.hello:app",
        "--listen",
        "127.0.0.1:8506",
        "--workers",
        "1",
        "--python",
        sys.executable,
        "--state-dir",
        name,
        "--unit-dir",
        "/run/systemd/system",
        "--now",
        check=False,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    try:
        box.systemctl("start", f"{name}.target")
        box.wait_for(
            lambda: box.show(f"{name}@1.service", "ActiveState")["ActiveState"] == "active", what=f"{name}@1 active"
        )
        removed = box.run(sys.executable, "-m", "sockact", "uninstall", name, check=False, timeout=120)
        print(f"\n$ sockact uninstall {name}\n{removed.stdout}")
        assert removed.returncode == 0, removed.stderr
        assert (
            f"kept /var/lib/private/{name} (StateDirectory=, the app's data, linked from /var/lib/{name})"
            in removed.stdout
        )
        assert removed.stdout.rstrip().endswith(", 1 directory kept")
    finally:
        box.run("rm", "-rf", f"/var/lib/private/{name}", f"/var/lib/{name}", check=False)
