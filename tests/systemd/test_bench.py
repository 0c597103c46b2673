"""The benchmark runs end to end on a tiny load (`bench/run --quick`), so it cannot rot.

Only the shape of the report is checked: every contender has its rows, and a row that could not be
measured says why. The numbers themselves are the benchmark's business, not the test's.
"""

from __future__ import annotations

import http.server
import importlib
import json
import math
import os
import pathlib
import re
import subprocess
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from helpers import REPO

from sockact.box import HarnessError, unavailable_reason

SERVERS = (
    "sockact",
    "granian",
    "gunicorn + uvicorn-worker",
    "uvicorn --workers",
    "uWSGI",
    "gunicorn sync",
    "node cluster",
    "pm2",
)
# The peers and apps added beside the hello apps: each must start and answer in every mode.
NEW_CONTENDERS = (
    "granian-asgi",
    "granian-wsgi",
    "uwsgi",
    "sockact-fastapi",
    "granian-fastapi",
    "gunicorn-uvicorn-fastapi",
    "uvicorn-fastapi",
    "sockact-flask",
    "granian-flask",
    "uwsgi-flask",
    "gunicorn-sync-flask",
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    reason = unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI must be able to run the benchmark: {reason}", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"bench/run --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def section(markdown: str, title: str) -> list[str]:
    """The table rows under a '## title' heading."""
    body = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [
        line
        for line in body.splitlines()
        if line.startswith("| ")
        and not line.startswith("| server |")
        and not line.startswith("| app |")
        and not line.startswith("| target |")
    ]


def test_writes_markdown_chart_and_raw_numbers(quick_run: pathlib.Path) -> None:
    markdown = (quick_run / "results.md").read_text()
    assert "cores" in markdown and "Versions:" in markdown
    assert (quick_run / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "](results.png)" in markdown
    json.loads((quick_run / "results.json").read_text())


def test_every_contender_has_its_throughput_rows(quick_run: pathlib.Path) -> None:
    rows = section((quick_run / "results.md").read_text(), "Requests per second and latency")
    # 2 connection modes each: ASGI hello and await 10 ms, WSGI hello, FastAPI JSON (ASGI), Flask JSON (WSGI).
    expected = {
        "sockact": 10,
        "granian": 10,
        "gunicorn + uvicorn-worker": 6,
        "uvicorn --workers": 6,
        "uWSGI": 4,
        "gunicorn sync": 4,
        "node cluster": 4,
        "pm2": 4,
    }
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
    for target in (
        "gunicorn + uvicorn-worker",
        "uvicorn --workers",
        "gunicorn sync",
        "sockact reload",
        "systemctl restart",
        "fairness",
        "memory (PSS)",
        "imports",
    ):
        assert target in text, target


def test_in_ci_every_contender_runs(quick_run: pathlib.Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    if IN_CI:
        assert results["unavailable"] == {}, results["unavailable"]
    for key, deploys in results["deploys"].items():
        for scenario, deploy in deploys.items():
            assert deploy["result"] is not None or deploy["unavailable"], (key, scenario)


def test_new_contenders_and_framework_apps_start_and_answer(quick_run: pathlib.Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    for key in NEW_CONTENDERS:
        # They come from pip with the bench's requirements: missing here means missing everywhere.
        assert key not in results["unavailable"], (key, results["unavailable"].get(key))
        for mode in ("keep-alive", "close"):
            runs = results["throughput"][f"{key} / {mode}"]
            assert runs and runs[0]["requests"] > 0, (key, mode, runs)
            assert sum(runs[0]["errors"].values()) == 0, (key, mode, runs[0]["errors"])


def test_every_run_has_its_latency_percentiles(quick_run: pathlib.Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    for name, runs in results["throughput"].items():
        for run in runs:
            ordered = [run["p50_ms"], run["p75_ms"], run["p90_ms"], run["p99_ms"], run["max_ms"]]
            assert not any(math.isnan(value) for value in ordered), (name, run)
            assert ordered[0] > 0 and ordered == sorted(ordered), (name, ordered)


def test_sockact_against_each_peer(quick_run: pathlib.Path) -> None:
    markdown = (quick_run / "results.md").read_text()
    header = next(
        line
        for line in markdown.split("## sockact against each peer\n", 1)[1].splitlines()
        if line.startswith("| app |")
    )
    columns = [cell.strip() for cell in header.strip("| ").split(" | ")]
    assert columns[4:] == [
        "granian",
        "gunicorn (uvicorn-worker / sync)",
        "uvicorn --workers",
        "uWSGI",
        "vs fastest peer",
    ], columns
    rows = [
        [cell.strip() for cell in row.strip("| ").split(" | ")]
        for row in section(markdown, "sockact against each peer")
    ]
    # ASGI hello, ASGI await 10 ms, WSGI hello, FastAPI, Flask; keep-alive and close each.
    assert len(rows) == 10, rows
    for row in rows:
        cells = dict(zip(columns, row))
        wsgi = cells["app"] in ("WSGI", "Flask (WSGI)")
        assert cells["sockact req/s · p50 · p99"].count(" ms") == 2, row
        assert cells["granian"].count("×") == 3, row
        assert (cells["uWSGI"].count("×") == 3) if wsgi else cells["uWSGI"] == "—", row
        assert (cells["uvicorn --workers"] == "—") if wsgi else cells["uvicorn --workers"].count("×") == 3, row
        fastest, _, ratios = cells["vs fastest peer"].partition(": ")
        assert fastest in SERVERS and ratios.count("×") == 3, row


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"hello\n")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request would flood the test's output."""


@pytest.fixture
def bench_load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench.load, importable from the checkout (bench/ is not part of the installed package)."""
    monkeypatch.syspath_prepend(str(REPO))
    import bench.load

    return bench.load


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """wrk resets its connections when it stops; that is no error of the test's."""


@pytest.fixture
def hello_server() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _real_wrk_run(bench_load: ModuleType, port: int) -> str:
    argv = bench_load.Load(f"http://127.0.0.1:{port}/", connections=8).argv(2)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_wrk_latency_distribution_is_read_from_a_real_run(bench_load: ModuleType, hello_server: int) -> None:
    out = _real_wrk_run(bench_load, hello_server)
    result = bench_load.parse(out)
    print(
        f"\nwrk against a threaded Python server: {result.rps:.0f} req/s, p50 {result.p50_ms:.3f} ms, "
        f"p75 {result.p75_ms:.3f}, p90 {result.p90_ms:.3f}, p99 {result.p99_ms:.3f}, max {result.max_ms:.3f}"
    )
    assert result.requests > 0 and result.errors.total == 0, out
    assert 0 < result.p50_ms <= result.p75_ms <= result.p90_ms <= result.p99_ms <= result.max_ms, out
    printed = bench_load.latency_distribution(out)
    assert sorted(printed) == [50.0, 75.0, 90.0, 99.0], out
    # What parse() kept is what wrk printed, in milliseconds whatever unit wrk chose.
    for percent, value in ((75.0, result.p75_ms), (90.0, result.p90_ms)):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{percent:g}%"))
        number, unit = line.split()[1].rstrip("usmh"), line.split()[1].lstrip("0123456789.")
        assert value == pytest.approx(float(number) * bench_load.UNIT_MS[unit]), line


def test_wrk_latency_that_disagrees_with_the_lua_summary_is_refused(bench_load: ModuleType, hello_server: int) -> None:
    out = _real_wrk_run(bench_load, hello_server)
    line = next(line for line in out.splitlines() if line.strip().startswith("99%"))
    # A p99 a thousand times off, as a unit read wrongly would make it.
    tampered = out.replace(line, line.replace("us", "ms") if "us" in line else line.replace("ms", "s"))
    with pytest.raises(HarnessError, match="p99"):
        bench_load.parse(tampered)


def test_docs_benchmarks_holds_the_results_block_bench_run_writes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # The overview lives in docs/benchmarks.md, not the README: the committed block must be what a full
    # run writes from the committed bench/results.json, so the page and the raw numbers cannot part.
    monkeypatch.syspath_prepend(str(REPO))
    report = importlib.import_module("bench.report")
    entry = importlib.import_module("bench.__main__")
    measure = importlib.import_module("bench.measure")
    assert entry.BENCHMARKS_PAGE == REPO / "docs" / "benchmarks.md"
    results = measure.results_from_json(json.loads((REPO / "bench" / "results.json").read_text()))
    block = report.results_block(results, entry._lineup_for_report(results.settings.workers, None))
    page = entry.BENCHMARKS_PAGE.read_text()
    assert block in page, "docs/benchmarks.md: run `bench/run --from-json bench/results.json` to rewrite its block"
    assert report.BLOCK_START not in (REPO / "README.md").read_text()
    for target in re.findall(r"\]\((\.\./[^)]+)\)", block):
        assert (REPO / "docs" / target).resolve().exists(), target
    # A stale block is replaced and the text around it kept.
    stale = tmp_path / "benchmarks.md"
    stale.write_text(page.replace(block, f"{report.BLOCK_START}\nold figures\n{report.BLOCK_END}"))
    assert report.update_block(stale, block)
    assert stale.read_text() == page
