"""`python -m bench`: run every contender in alternating rounds inside one private systemd, write the report.

Use `bench/run`, which installs the tools first; this module expects them installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from sockact.box import HarnessError, PrivateSystemd, unavailable_reason

from . import report
from .contenders import Bench, Contender, NotAvailable, deploys_not_measured, lineup
from .measure import Results, Settings, import_times, results_from_json, run_deploys, run_round
from .quiet import Meter, own_cgroup, wait_until_quiet

log = logging.getLogger("bench")
HERE = pathlib.Path(__file__).resolve().parent
# The page whose marked block a full run rewrites (bench/report.py BLOCK_START, BLOCK_END).
BENCHMARKS_PAGE = HERE.parent / "docs" / "benchmarks.md"
NOISY = 0.05  # others using more than this share of the machine make the numbers suspect
PYTHON_PACKAGES = (
    "sockact",
    "uvicorn",
    "gunicorn",
    "uvicorn-worker",
    "granian",
    "uwsgi",
    "uvloop",
    "httptools",
    "fastapi",
    "pydantic",
    "flask",
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny load (1 round of 1 s cells): checks it all runs")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="where results.md/.png/.json go")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, --quick 1)")
    parser.add_argument("--seconds", type=int, help="length of one throughput run (default 4, --quick 1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers per server (default: cores)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--only", action="append", metavar="KEY", help="run only these contenders (debugging)")
    parser.add_argument(
        "--from-json",
        type=pathlib.Path,
        metavar="PATH",
        help="measure nothing: write the report again from a run's results.json",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    return Settings(
        rounds=args.rounds or (1 if quick else 5),
        seconds=args.seconds or (1 if quick else 4),
        fairness_seconds=1 if quick else 3,
        warmup_seconds=1,
        deploy_lead_s=0.5 if quick else 1.5,
        deploy_tail_s=0.5 if quick else 1.5,
        connections=args.connections,
        threads=1,
        workers=args.workers,
        quick=quick,
        retry_budget_s=0.0 if quick else 150.0,
    )


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {"cores": str(os.cpu_count()), "cpu": cpu, "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def versions(bench: Bench) -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for name in PYTHON_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # an engine this sockact does not use
            continue
    revision = _output(["git", "-C", str(bench.repo), "describe", "--always", "--dirty"])
    if revision and " " not in revision:  # not a git checkout: git printed an error instead
        found["sockact"] += f" (git {revision})"
    found["systemd"] = str(bench.box.systemd_version())
    found["node"] = _output(["node", "--version"]).lstrip("v")
    pm2_package = bench.root / "node" / "node_modules" / "pm2" / "package.json"
    found["pm2"] = json.loads(pm2_package.read_text())["version"]
    # `wrk -v` prints "wrk VERSION [engine] Copyright..." and then its usage.
    found["wrk"] = _output(["wrk", "-v"]).split()[1]
    return found


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip()


def run_rounds(
    bench: Bench, contenders: list[Contender], settings: Settings, results: Results, group: pathlib.Path | None
) -> None:
    retry_until = time.monotonic() + settings.retry_budget_s
    for round_no in range(settings.rounds):
        # Alternate the order so drift (heat, caches, background work) does not favour one side.
        order = contenders if round_no % 2 == 0 else contenders[::-1]
        for contender in order:
            if contender.key not in results.unavailable:
                log.info("round %d/%d: %s (%s)", round_no + 1, settings.rounds, contender.server, contender.app)
                _one_round(bench, contender, settings, results, group, retry_until)


def _one_round(
    bench: Bench,
    contender: Contender,
    settings: Settings,
    results: Results,
    group: pathlib.Path | None,
    retry_until: float,
) -> None:
    """Measure; measure again, while the retry budget lasts, if other processes took a share meanwhile."""
    while True:
        meter = Meter(group)
        try:
            figures = run_round(bench, contender, settings)
        except NotAvailable as exc:
            results.unavailable[contender.key] = str(exc)
        except (HarnessError, subprocess.SubprocessError, OSError) as exc:
            results.unavailable[contender.key] = f"failed to run: {str(exc).strip().splitlines()[0]}"
        if contender.key in results.unavailable:
            log.warning("  %s: %s", contender.server, results.unavailable[contender.key])
            return
        share = meter.share()
        if share is None or share <= NOISY or time.monotonic() > retry_until:
            break
        log.warning(
            "  others (processes, steal time) took %.0f%% of the machine meanwhile: measuring again", 100 * share
        )
        wait_until_quiet(group, limit_s=max(0.0, min(15.0, retry_until - time.monotonic())))
    figures.add_to(results, contender.key)
    if share is not None:
        results.background.setdefault(contender.key, []).append(share)
        if share > NOISY:
            log.warning("  others (processes, steal time) took %.0f%% of the machine meanwhile", 100 * share)


def run_all_deploys(bench: Bench, contenders: list[Contender], settings: Settings, results: Results) -> None:
    for contender in contenders:
        if contender.key in results.unavailable or deploys_not_measured(contender):
            continue
        log.info("deploys: %s (%s)", contender.server, contender.app)
        try:
            results.deploys[contender.key] = run_deploys(bench, contender, settings)
        except (NotAvailable, HarnessError, subprocess.SubprocessError, OSError) as exc:
            log.warning("  %s: deploys failed: %s", contender.server, exc)


def stage_scripts(root: pathlib.Path) -> None:
    """Copy wrk's Lua scripts and the cold-start probe under root: they run inside the private
    systemd, whose /tmp, /var/tmp and /run are its own, so a checkout there would be invisible."""
    from . import load, measure

    scripts = root / "scripts"
    shutil.rmtree(scripts, ignore_errors=True)
    shutil.copytree(HERE / "wrk", scripts / "wrk")
    shutil.copy(HERE / "probe.py", scripts / "probe.py")
    for path in [scripts, *scripts.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    load.SCRIPTS = scripts / "wrk"
    measure.PROBE = str(scripts / "probe.py")


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.from_json:
        results = results_from_json(json.loads(args.from_json.read_text()))
        return publish(results, _lineup_for_report(results.settings.workers, args.only), args)
    reason = unavailable_reason()
    if reason is not None:
        sys.stderr.write(f"bench: {reason}\n")
        return 1
    settings = settings_from(args)
    root = pathlib.Path(os.environ.get("SOCKACT_BENCH_ROOT", "/opt/sockact-bench"))
    stage_scripts(root)
    results = Results(settings, machine=machine())
    # The cgroup first: the box is created below it, so its CPU time counts as the benchmark's own.
    with own_cgroup() as group, PrivateSystemd() as box, tempfile.TemporaryDirectory(prefix="sockact-bench-") as logs:
        bench = Bench(box=box, root=root, repo=HERE.parent, workers=settings.workers, logs=pathlib.Path(logs))
        contenders = [c for c in lineup(bench) if not args.only or c.key in args.only]
        results.versions = versions(bench)
        if not settings.quick:
            share = wait_until_quiet(group, limit_s=60)
            if share is not None and share > NOISY:
                log.warning(
                    "the machine is busy (others, steal time included, take %.0f%% of it); measuring anyway",
                    100 * share,
                )
        run_rounds(bench, contenders, settings, results, group)
        run_all_deploys(bench, contenders, settings, results)
        results.imports_ms = import_times(bench, repeats=3 if settings.quick else 9)
    return publish(results, contenders, args)


def _lineup_for_report(workers: int, only: list[str] | None) -> list[Contender]:
    # Only names, ports and routes are read when writing a report: no box is needed.
    bench = Bench(box=None, root=pathlib.Path(), repo=HERE.parent, workers=workers, logs=pathlib.Path())  # type: ignore[arg-type]
    return [c for c in lineup(bench) if not only or c.key in only]


def publish(results: Results, contenders: list[Contender], args: argparse.Namespace) -> int:
    settings = results.settings
    command = "bench/run --quick" if settings.quick else "bench/run"
    for path in report.write(results, contenders, args.out, command):
        log.info("wrote %s", path)
    # Only a full run of every contender into the committed results speaks for docs/benchmarks.md.
    if not settings.quick and not args.only and args.out.resolve() == HERE:
        page = BENCHMARKS_PAGE
        if report.update_block(page, report.results_block(results, contenders)):
            log.info("updated the results in %s", page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
