"""The fault benchmark runs end to end: one fault (crash URL, short) against sockact only.

Checks the table is produced with measured figures: probes answered of a real total, a longest outage,
who had to act. What the figures are is the benchmark's business, not the test's.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import time

import pytest
from helpers import REPO

from sockact.box import unavailable_reason

IN_CI = os.environ.get("CI", "").lower() in ("1", "true")
ROW = re.compile(r"^\| crash URL [^|]*\| sockact \| (\d+) of (\d+) \| (\d+\.\d) s \| ([^|]+) \|", re.MULTILINE)


def test_one_fault_against_sockact(tmp_path: pathlib.Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI must be able to run the fault benchmark: {reason}", pytrace=False)
        pytest.skip(reason)
    began = time.monotonic()
    done = subprocess.run(
        [
            str(REPO / "bench" / "run"),
            "--faults",
            "--quick",
            "--only",
            "sockact",
            "--fault",
            "crash",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    took = time.monotonic() - began
    assert done.returncode == 0, f"bench/run --faults failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    printed = ROW.search(done.stdout)
    assert printed, f"no sockact crash row in what was printed:\n{done.stdout}"
    answered, probes, outage, acted = int(printed[1]), int(printed[2]), float(printed[3]), printed[4].strip()
    print(
        f"\ncrash URL, sockact, quick: {answered} of {probes} probes answered, longest outage {outage} s, "
        f"who had to act: {acted} ({took:.0f} s in all)"
    )
    # A quick run probes for lead + 20 crashes x 0.3 s + tail = 7.5 s, a probe every 0.1 s.
    assert probes == 75
    assert 0 <= answered <= probes and outage <= probes * 0.1
    assert acted == "nobody" or acted.startswith("operator ran `sockact start ")
    assert ROW.search((tmp_path / "faults.md").read_text()), "faults.md lacks the row"
    data = json.loads((tmp_path / "faults.json").read_text())
    (row,) = data["rows"]
    assert (row["answered"], row["probes"], row["longest_outage_s"]) == (answered, probes, outage)
    assert sum(row["failures"].values()) == probes - answered, "every failed probe says how it failed"
    assert row["load"]["requests"] > 0, "the background load did not run"
    assert "20 GET /crash" in row["detail"]
