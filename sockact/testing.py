"""The pytest plugin for tests on a private systemd: fixtures ``private_systemd`` and ``fresh_systemd``.

``private_systemd`` boots one box (``sockact.box.PrivateSystemd``) per test module, ``fresh_systemd``
one per test. Where a box cannot boot (no root, no unshare, ...) they skip, except under ``CI=true``,
where they fail: a CI run must never pass by skipping them. Installed with sockact, the plugin loads in
any pytest run (entry point ``pytest11``); ``pytest_plugins = ["sockact.testing"]`` in a conftest.py
does the same where plugin autoloading is off. ``PrivateSystemd``, ``HarnessError`` and
``unavailable_reason`` are re-exported for tests that drive a box themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from .box import HarnessError, PrivateSystemd, unavailable_reason

__all__ = ["HarnessError", "PrivateSystemd", "fresh_systemd", "private_systemd", "unavailable_reason"]


def _skip_or_fail(reason: str) -> NoReturn:
    """Skip where a private systemd cannot run; in CI that is a broken runner, so fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"CI must be able to boot a private systemd: {reason}", pytrace=False)
    pytest.skip(reason)


def _booted_box() -> Iterator[PrivateSystemd]:
    reason = unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    with PrivateSystemd() as box:
        yield box


@pytest.fixture(scope="module")
def private_systemd() -> Iterator[PrivateSystemd]:
    """A private systemd shared by the tests of one module."""
    yield from _booted_box()


@pytest.fixture
def fresh_systemd() -> Iterator[PrivateSystemd]:
    """A private systemd of this test's own."""
    yield from _booted_box()
