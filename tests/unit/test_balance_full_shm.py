"""The scoreboard when /dev/shm has no room: slots allocated before siblings see them, sparse slots never mapped."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from sockact.runtime import balance
from sockact.runtime.balance import SLOT, Scoreboard


def test_a_slot_is_allocated_before_siblings_can_see_it(tmp_path: Path) -> None:
    one = Scoreboard("app", "1", str(tmp_path))
    st = os.stat(one.path)
    assert st.st_size == SLOT.size and st.st_blocks > 0  # its page exists: touching it cannot fault
    assert os.listdir(tmp_path) == [Path(one.path).name]  # built under a hidden name, renamed into place


def test_a_sized_but_unallocated_slot_is_never_mapped(tmp_path: Path) -> None:
    # What a worker that died of a full /dev/shm before its first heartbeat leaves: reading it
    # through a mapping would fault in a page, SIGBUS when tmpfs has no room.
    sparse = tmp_path / "sockact.app@9.99999"
    sparse.touch()
    os.truncate(sparse, SLOT.size)
    assert os.stat(sparse).st_blocks == 0
    one = Scoreboard("app", "1", str(tmp_path))
    assert one.siblings == {}
    two = Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    assert list(one.siblings) == [two.path]


def test_no_room_for_a_slot_is_one_warning_and_no_scoreboard(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setenv("SOCKACT_APP", f"nospace{os.getpid()}")
    monkeypatch.setenv("SOCKACT_WORKER", "1")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with caplog.at_level(logging.WARNING, logger="sockact.runtime"):
        assert balance.for_this_worker() is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "serving without the /dev/shm scoreboard ([Errno 28] No space left on device)"
    ]
    assert not [name for name in os.listdir("/dev/shm") if f"nospace{os.getpid()}" in name]  # nothing left behind
