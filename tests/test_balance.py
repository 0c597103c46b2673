"""The least-connections scoreboard, with real files and mmaps in a temporary directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sockact.runtime import balance
from sockact.runtime.balance import SLOT, Scoreboard


def test_a_worker_defers_to_a_sibling_with_fewer_connections(tmp_path: Path) -> None:
    one, two = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    two.refresh()
    assert one.least_loaded() and two.least_loaded()  # both idle: both may accept
    one.publish(3)
    two.publish(1)
    assert not one.least_loaded() and two.least_loaded()
    assert one.overloaded() and not two.overloaded()
    one.publish(2)
    assert not one.overloaded()  # one above the other is normal churn, not worth a reconnect


def test_a_silent_sibling_is_ignored_then_forgotten(tmp_path: Path, monkeypatch: object) -> None:
    one, two = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    one.publish(5)
    SLOT.pack_into(two.own, 0, 0, time.monotonic() - 2 * balance.STALE)  # hung: no heartbeat
    assert one.least_loaded()
    SLOT.pack_into(two.own, 0, 0, time.monotonic() - 2 * balance.FORGOTTEN)  # killed long ago
    one.refresh()
    assert not Path(two.path).exists() and one.siblings == {}


def test_close_unlinks_and_siblings_drop_it(tmp_path: Path) -> None:
    one, two = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    assert len(one.siblings) == 1
    two.close()
    one.refresh()
    assert one.siblings == {} and sorted(os.listdir(tmp_path)) == [Path(one.path).name]


def test_other_apps_are_not_siblings(tmp_path: Path) -> None:
    one, _other = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app.v2", "1", str(tmp_path))
    one.refresh()
    assert one.siblings == {}
