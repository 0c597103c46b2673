"""Shared test setup: the private-systemd fixtures come from sockact.testing."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["sockact.testing"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true nothing may pass by skipping: a skip becomes a failure that names its reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


@pytest.fixture(scope="session")
def shared_apps() -> Iterator[Path]:
    """tests/apps copied where any user can read it (workers may run as a DynamicUser)."""
    # /opt, not /tmp: the private systemd mounts its own /tmp, and /root is closed to other users.
    directory = Path(tempfile.mkdtemp(prefix="sockact-test-apps-", dir="/opt"))
    shutil.copytree(Path(__file__).parent / "apps", directory, dirs_exist_ok=True)
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
