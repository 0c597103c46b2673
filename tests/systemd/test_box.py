"""Self-test of sockact.box and its fixtures (sockact.testing): a private systemd boots, runs units, and leaves
the host as it was."""

from __future__ import annotations

import os
import pathlib
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

import sockact.box
from sockact import testing
from sockact.box import HarnessError, PrivateSystemd, unavailable_reason
from sockact.box.host import cgroup2_mountpoint
from sockact.box.lifecycle import TARGET

ONESHOT = """\
[Unit]
Description=sockact harness check

[Service]
Type=oneshot
ExecStart=/bin/true
ExecStart=/bin/echo sockact-harness-says-hello
RemainAfterExit=yes
"""


def _require_box() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def box() -> Iterator[PrivateSystemd]:
    _require_box()
    started = time.monotonic()
    with PrivateSystemd() as booted:
        print(f"\nprivate systemd booted in {time.monotonic() - started:.3f}s")
        yield booted


def _box_pids(pidns: str) -> list[int]:
    """Host PIDs of every process still in the given PID namespace."""
    found = []
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "ns" / "pid") == pidns:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_system_is_running(box: PrivateSystemd) -> None:
    state = box.run("systemctl", "is-system-running", check=False).stdout.strip()
    failed = box.systemctl("list-units", "--failed", "--plain", "--no-legend").stdout
    assert state in ("running", "degraded"), failed
    assert state == "running", f"boot left failed units:\n{failed}"


def test_pid1_is_systemd(box: PrivateSystemd) -> None:
    assert box.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert box.systemd_version() >= 240


def test_oneshot_unit_runs_and_logs(box: PrivateSystemd) -> None:
    box.write_unit("harness-check.service", ONESHOT)
    box.daemon_reload()
    box.systemctl("start", "harness-check.service")
    box.wait_active("harness-check.service")
    assert box.show("harness-check.service", "ActiveState", "Result") == {"ActiveState": "active", "Result": "success"}
    box.wait_for(
        lambda: "sockact-harness-says-hello" in box.journal("-u", "harness-check.service"),
        what="the oneshot's output in the journal",
    )
    assert "Finished" in box.journal("-u", "harness-check.service")


def test_unit_dir_is_the_box_runtime_dir(box: PrivateSystemd) -> None:
    assert box.unit_dir() == box.path("/run/systemd/system")
    assert (box.unit_dir() / TARGET).is_file()
    assert not pathlib.Path("/run/systemd/system", TARGET).exists()


def test_drop_in_and_bad_names(box: PrivateSystemd) -> None:
    box.write_unit("harness-check.service.d/10-env.conf", "[Service]\nEnvironment=HARNESS=1\n")
    box.daemon_reload()
    assert "HARNESS=1" in box.show("harness-check.service", "Environment")["Environment"]
    with pytest.raises(HarnessError, match="relative"):
        box.write_unit("../escape.service", ONESHOT)


def test_failing_unit_is_reported(box: PrivateSystemd) -> None:
    box.write_unit("harness-fails.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
    box.daemon_reload()
    box.systemctl("start", "--no-block", "harness-fails.service")
    with pytest.raises(HarnessError, match="harness-fails.service failed"):
        box.wait_active("harness-fails.service", timeout=10)


def test_dynamic_user_service(box: PrivateSystemd) -> None:
    result = box.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "DynamicUser=yes", "/usr/bin/id", "-u")
    assert int(result.stdout) != 0


def test_socket_activation_over_loopback(box: PrivateSystemd) -> None:
    box.write_unit("harness-echo.socket", "[Socket]\nListenStream=127.0.0.1:8765\nAccept=yes\n")
    box.write_unit("harness-echo@.service", "[Service]\nExecStart=/bin/echo hello-from-socket\nStandardInput=socket\n")
    box.daemon_reload()
    box.systemctl("start", "harness-echo.socket")
    reply = box.run("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8765 && cat <&3", timeout=10)
    assert reply.stdout == "hello-from-socket\n"


def test_run_reports_failure_and_timeout(box: PrivateSystemd) -> None:
    with pytest.raises(HarnessError, match="exited with status 1"):
        box.run("false")
    assert box.run("cat", input="piped").stdout == "piped"
    assert box.run("sh", "-c", "echo $HARNESS_VAR", env={"HARNESS_VAR": "set"}).stdout.strip() == "set"
    started = time.monotonic()
    with pytest.raises(HarnessError, match="timed out"):
        box.run("sleep", "30", timeout=0.5)
    assert time.monotonic() - started < 10
    # The timeout killed the command inside the box, not only nsenter (systemd reaps it a moment later).
    box.wait_for(lambda: box.run("pgrep", "-x", "sleep", check=False).returncode == 1, what="sleep to be gone")


def test_popen_terminate_reaches_the_command(box: PrivateSystemd) -> None:
    proc = box.popen("sleep", "60")
    box.wait_for(lambda: box.run("pgrep", "-x", "sleep", check=False).returncode == 0, what="sleep to start")
    proc.terminate()
    proc.wait(timeout=10)
    box.wait_for(lambda: box.run("pgrep", "-x", "sleep", check=False).returncode == 1, what="sleep to end")


def test_wait_for_times_out(box: PrivateSystemd) -> None:
    with pytest.raises(HarnessError, match="timed out waiting for nothing"):
        box.wait_for(lambda: False, timeout=0.1, what="nothing")


def test_box_is_private_and_leaves_nothing_behind() -> None:
    _require_box()
    marker = pathlib.Path(tempfile.gettempdir(), f"sockact-harness-{uuid.uuid4().hex}")
    marker.write_text("host")
    host_dev = sorted(os.listdir("/dev"))
    try:
        box = PrivateSystemd().start()
        pid = box.pid
        pidns = os.readlink(f"/proc/{pid}/ns/pid")
        # systemd sits in init.scope of the box's own cgroup.
        scope = pathlib.Path(f"/proc/{pid}/cgroup").read_text().split("0::", 1)[1].splitlines()[0]
        cgroup = (cgroup2_mountpoint() / scope.lstrip("/")).parent
        assert box.run("test", "-e", str(marker), check=False).returncode == 1
        box.run("touch", "/tmp/from-the-box")
        assert not pathlib.Path("/tmp/from-the-box").exists()
        assert cgroup.is_dir()
        box.close()
        box.close()  # idempotent
        assert marker.read_text() == "host"
        assert not os.path.exists(f"/proc/{pid}")
        assert _box_pids(pidns) == []
        assert not cgroup.exists()
        assert sorted(os.listdir("/dev")) == host_dev
        with pytest.raises(HarnessError, match="not running"):
            box.run("true")
    finally:
        marker.unlink()


def test_boxes_are_independent(box: PrivateSystemd) -> None:
    with PrivateSystemd() as other:
        assert other.pid != box.pid
        other.write_unit("only-here.service", ONESHOT)
        other.daemon_reload()
        other.systemctl("start", "only-here.service")
        assert box.systemctl("is-active", "only-here.service", check=False).stdout.strip() == "inactive"
        assert not (box.unit_dir() / "only-here.service").exists()
    # Closing the other box left this one alone.
    assert box.systemctl("is-active", TARGET).stdout.strip() == "active"


def test_fixtures_are_defined_and_the_box_is_re_exported() -> None:
    assert callable(testing.private_systemd)
    assert callable(testing.fresh_systemd)
    # `from sockact.testing import PrivateSystemd` is what users' tests were told to write.
    for name in ("PrivateSystemd", "HarnessError", "unavailable_reason"):
        assert name in testing.__all__
        assert getattr(testing, name) is getattr(sockact.box, name)
