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
    SLOT.pack_into(two.own, 0, 0, time.monotonic() - 2 * balance.STALE, 0)  # hung: no heartbeat
    assert one.least_loaded()
    SLOT.pack_into(two.own, 0, 0, time.monotonic() - 2 * balance.FORGOTTEN, 0)  # killed long ago
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


def test_a_worker_never_stops_accepting_for_a_sibling_that_stopped(tmp_path: Path) -> None:
    """Connections opened in a burst: the first worker takes a few and stops for its idle sibling,
    which then takes more. Were the sibling to stop in turn for the first (which no longer accepts),
    nobody would accept until a tick; it must go on accepting instead."""
    one, two = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    two.refresh()
    first, second = balance.AcceptGate(one), balance.AcceptGate(two)
    one.publish(balance.PAUSE_AHEAD)
    assert first.ahead()  # 3 against 0: the first stops accepting
    two.publish(2 * balance.PAUSE_AHEAD)
    assert not second.ahead()  # 6 against 3, but the 3 are not accepting: the second goes on
    assert first.caught_up()  # now the least busy: it accepts again, and says so
    assert second.ahead()  # and from then on the second may stop for it
    assert not first.ahead() and first.caught_up()
    assert not second.caught_up()  # still 3 ahead of the first, which accepts


def test_a_paused_worker_accepts_again_when_no_sibling_accepts(tmp_path: Path) -> None:
    one, two = Scoreboard("app", "1", str(tmp_path)), Scoreboard("app", "2", str(tmp_path))
    one.refresh()
    two.refresh()
    one.publish(10)
    assert balance.AcceptGate(one).ahead()
    two.publish(9)
    two.accepting(False)  # both stopped (a race between two looks): the tick must undo it
    assert balance.AcceptGate(one).caught_up()


def test_autogroup_nice_for_a_worker_count() -> None:
    from sockact.runtime.share import NICE_STEP, nice_for

    assert [nice_for(n) for n in (1, 2, 3, 4, 8, 16, 10_000)] == [0, 3, 5, 6, 9, 12, 19]
    for workers in (2, 4, 8, 16):  # together within a nice step of one nice-0 group's weight
        together = workers / NICE_STEP ** nice_for(workers)
        assert 1 / NICE_STEP < together < NICE_STEP


def test_a_session_leader_follows_the_worker_count_and_lowers_only_after_it_settled() -> None:
    import subprocess
    import sys

    script = (
        "import time\n"
        "from sockact.runtime.share import SETTLE, CpuShare\n"
        "def read(): return open('/proc/self/autogroup').read().split()[-1]\n"
        "share = CpuShare('app')\n"
        "def settle():\n"
        "    while share.pending:  # another process changed an autogroup within 0.1 s: as the tick does\n"
        "        time.sleep(0.1); share.apply()\n"
        "if share.applied is None: print('-'); raise SystemExit\n"
        "share.update(4, now=100.0); settle(); seen = [read()]\n"
        "share.update(2, now=101.0); settle(); seen.append(read())  # lower, but not for SETTLE yet\n"
        "share.update(2, now=101.0 + SETTLE); settle(); seen.append(read())\n"
        "share.update(8, now=107.0); settle(); seen.append(read())  # up at once\n"
        "print(' '.join(seen))\n"
        "print(CpuShare('worker').applied)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, start_new_session=True, timeout=30
    )
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if enabled.exists() and enabled.read_text().strip() == "1":
        seen, worker = done.stdout.splitlines()
        assert seen == "6 6 3 9"
        assert worker == "None"
    else:
        assert done.stdout.strip() == "-"
    # Not a session leader (a child of a shell or a test runner): the autogroup is someone else's.
    code = "from sockact.runtime.share import CpuShare; print(CpuShare().applied)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert done.stdout.strip() == "None"
