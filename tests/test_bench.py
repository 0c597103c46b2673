"""The benchmark runs end to end on a tiny load (`bench/run --quick`), so it cannot rot.

Only the shape of the report is checked: every contender has its rows, and a row that could not be
measured says why. The numbers themselves are the benchmark's business, not the test's.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from sockact.testing import unavailable_reason

REPO = pathlib.Path(__file__).resolve().parent.parent
SERVERS = ("sockact", "gunicorn + uvicorn-worker", "uvicorn --workers", "gunicorn sync", "node cluster", "pm2")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    reason = unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI must be able to run the benchmark: {reason}", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([str(REPO / "bench" / "run"), "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"bench/run --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def section(markdown: str, title: str) -> list[str]:
    """The table rows under a '## title' heading."""
    body = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| server |")
            and not line.startswith("| app |") and not line.startswith("| target |")]


def test_writes_markdown_chart_and_raw_numbers(quick_run: pathlib.Path) -> None:
    markdown = (quick_run / "results.md").read_text()
    assert "cores" in markdown and "Versions:" in markdown
    assert (quick_run / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "](results.png)" in markdown
    json.loads((quick_run / "results.json").read_text())


def test_every_contender_has_its_throughput_rows(quick_run: pathlib.Path) -> None:
    rows = section((quick_run / "results.md").read_text(), "Requests per second and latency")
    # ASGI-like servers: 2 handlers x 2 connection modes; WSGI servers: 1 handler x 2 modes.
    expected = {"sockact": 6, "gunicorn + uvicorn-worker": 4, "uvicorn --workers": 4, "gunicorn sync": 2,
                "node cluster": 4, "pm2": 4}
    for server, count in expected.items():
        mine = [row for row in rows if row.split(" | ")[3].strip("* ") == server]
        assert len(mine) == count, f"{server}: {len(mine)} rows, expected {count}"
        for row in mine:
            assert any(ch.isdigit() for ch in row.split(" | ")[4]) or "not available: " in row, row


def test_fairness_coldstart_memory_and_deploy_rows(quick_run: pathlib.Path) -> None:
    markdown = (quick_run / "results.md").read_text()
    for title in ("Fairness, cold start, memory", "Reload and restart under load"):
        rows = section(markdown, title)
        servers = [row.split(" | ")[0].lstrip("| ") for row in rows]
        assert sorted(set(servers)) == sorted(SERVERS), (title, servers)
        for row in rows:
            measured = " ".join(row.split(" | ")[2:])
            assert "not available: " in row or "not run: " in row or any(ch.isdigit() for ch in measured), row


def test_targets_are_all_listed(quick_run: pathlib.Path) -> None:
    rows = section((quick_run / "results.md").read_text(), "Targets")
    text = "\n".join(rows)
    for target in ("gunicorn + uvicorn-worker", "uvicorn --workers", "gunicorn sync", "sockact reload",
                   "systemctl restart", "fairness", "memory (PSS)", "imports"):
        assert target in text, target


def test_in_ci_every_contender_runs(quick_run: pathlib.Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    if IN_CI:
        assert results["unavailable"] == {}, results["unavailable"]
    for key, deploys in results["deploys"].items():
        for scenario, deploy in deploys.items():
            assert deploy["result"] is not None or deploy["unavailable"], (key, scenario)
