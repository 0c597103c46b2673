"""Shared test setup: the private-systemd fixtures come from sockact.testing."""

pytest_plugins = ["sockact.testing"]

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
