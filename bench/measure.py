"""The measurements: throughput and latency, fairness, cold start, memory, deploys under load, imports."""

from __future__ import annotations

import logging
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sockact.box import HarnessError

from . import load
from .contenders import Bench, Contender, NotAvailable, memory_mb

log = logging.getLogger("bench")
PROBE = str(load.SCRIPTS.parent / "probe.py")
MODES = {False: "keep-alive", True: "close"}


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: int  # one throughput run
    fairness_seconds: int
    warmup_seconds: int
    deploy_lead_s: float  # load before the reload or restart begins
    deploy_tail_s: float  # load after it finished
    connections: int
    threads: int
    workers: int
    quick: bool
    # Time a run may spend measuring rounds again that other processes disturbed.
    retry_budget_s: float = 0.0


@dataclass
class Deploy:
    """One reload or restart under load; `unavailable` says why it did not run."""

    how: str
    result: load.WrkResult | None = None
    took_s: float = 0.0
    unavailable: str = ""


@dataclass
class Results:
    settings: Settings
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    throughput: dict[str, list[load.WrkResult]] = field(default_factory=dict)  # cell() -> one per round
    fairness: dict[str, list[load.WrkResult]] = field(default_factory=dict)
    cold_start_ms: dict[str, list[float]] = field(default_factory=dict)
    memory_mb: dict[str, list[float]] = field(default_factory=dict)  # PSS, every worker of every round
    deploys: dict[str, dict[str, Deploy]] = field(default_factory=dict)  # key -> "reload"/"restart"
    unavailable: dict[str, str] = field(default_factory=dict)
    imports_ms: dict[str, float] = field(default_factory=dict)
    # Share of the machine's CPU other processes used while each contender ran, per round.
    background: dict[str, list[float]] = field(default_factory=dict)


def results_from_json(data: dict[str, Any]) -> Results:
    """The Results a run saved in results.json, so a report can be written again without a rerun."""

    def runs(table: dict[str, list[dict[str, Any]]]) -> dict[str, list[load.WrkResult]]:
        return {key: [_wrk_result(run) for run in rs] for key, rs in table.items()}

    deploys = {
        key: {
            scenario: Deploy(d["how"], _wrk_result(d["result"]) if d["result"] else None, d["took_s"], d["unavailable"])
            for scenario, d in per_key.items()
        }
        for key, per_key in data["deploys"].items()
    }
    return Results(
        Settings(**data["settings"]),
        data["machine"],
        data["versions"],
        runs(data["throughput"]),
        runs(data["fairness"]),
        data["cold_start_ms"],
        data["memory_mb"],
        deploys,
        data["unavailable"],
        data["imports_ms"],
        data.get("background", {}),
    )


def _wrk_result(data: dict[str, Any]) -> load.WrkResult:
    fields = {key: value for key, value in data.items() if key != "rps"}
    return load.WrkResult(**{**fields, "errors": load.Errors(**fields["errors"])})


def cell(key: str, path: str, close: bool) -> str:
    return f"{key} {path} {MODES[close]}"


def url(contender: Contender, path: str) -> str:
    return f"http://127.0.0.1:{contender.port}{path}"


def cold_start(bench: Bench, contender: Contender) -> float:
    """Milliseconds from issuing the start command to the first 200, seen from inside the box."""
    probe = bench.box.popen(bench.python, PROBE, str(contender.port), "90", stdout=subprocess.PIPE, text=True)
    try:
        if probe.stdout is None or probe.stdout.readline().strip() != "polling":
            raise HarnessError("the cold-start probe did not start")
        began = time.monotonic()
        contender.start(bench)
        out, _ = probe.communicate(timeout=120)
    finally:
        probe.kill()
        probe.wait()
    if probe.returncode != 0 or not out.strip():
        raise HarnessError(f"{contender.server} never answered 200 after its start")
    return (float(out.strip()) - began) * 1000


@dataclass
class Round:
    """One contender's figures from one round, kept apart until the round is accepted."""

    cold_start_ms: float = 0.0
    throughput: dict[str, load.WrkResult] = field(default_factory=dict)
    fairness: load.WrkResult | None = None
    memory_mb: list[float] = field(default_factory=list)

    def add_to(self, results: Results, key: str) -> None:
        results.cold_start_ms.setdefault(key, []).append(self.cold_start_ms)
        for name, result in self.throughput.items():
            results.throughput.setdefault(name, []).append(result)
        if self.fairness is not None:
            results.fairness.setdefault(key, []).append(self.fairness)
        results.memory_mb.setdefault(key, []).extend(self.memory_mb)


def run_round(bench: Bench, contender: Contender, settings: Settings) -> Round:
    """Start one contender cold, load it in every mode, count requests per worker, stop it."""
    contender.prepare(bench)
    try:
        figures = Round(cold_start(bench, contender))
        contender.wait_ready(bench)
        contender.check(bench)
        _load_all(bench, contender, settings, figures)
        sizes = [memory_mb(bench.box, pids) for pids in contender.worker_processes(bench)]
        figures.memory_mb = [mb for mb in sizes if mb is not None]
        return figures
    finally:
        _stop(bench, contender)


def _load_all(bench: Bench, contender: Contender, settings: Settings, figures: Round) -> None:
    def loaded(path: str, close: bool = False, count_workers: bool = False) -> load.Load:
        return load.Load(
            url(contender, path), settings.connections, settings.threads, close, count_workers=count_workers
        )

    # Warm-up, not recorded: lazy imports, first connections and page faults happen here.
    load.run(bench.box, loaded(contender.paths[0]), settings.warmup_seconds)
    for path in contender.paths:
        for close, mode in MODES.items():
            result = load.run(bench.box, loaded(path, close), settings.seconds)
            figures.throughput[cell(contender.key, path, close)] = result
            log.info(
                "  %-28s %-7s %-10s %8.0f req/s  p99 %6.2f ms  errors %d",
                contender.server,
                path,
                mode,
                result.rps,
                result.p99_ms,
                result.errors.total,
            )
    # A pass of its own: wrk's per-response Lua hook costs throughput.
    figures.fairness = load.run(bench.box, loaded(contender.paths[0], count_workers=True), settings.fairness_seconds)


def _stop(bench: Bench, contender: Contender) -> None:
    try:
        contender.stop(bench)
    except (HarnessError, OSError, subprocess.SubprocessError) as exc:
        log.warning("stopping %s failed: %s", contender.server, exc)


def run_deploys(bench: Bench, contender: Contender, settings: Settings) -> dict[str, Deploy]:
    """The tool's own reload, then a full stop/start, each under load, counting failed requests."""
    deploys = {"reload": Deploy(contender.reload_how), "restart": Deploy(contender.restart_how)}
    contender.prepare(bench)
    try:
        contender.start(bench)
        contender.wait_ready(bench)
        for scenario, action in (("reload", contender.reload), ("restart", contender.restart)):
            try:
                _under_load(bench, contender, settings, deploys[scenario], action)
            except NotAvailable as exc:
                deploys[scenario].unavailable = str(exc)
            except (HarnessError, subprocess.SubprocessError) as exc:
                deploys[scenario].unavailable = f"did not complete: {_first_line(exc)}"
    finally:
        _stop(bench, contender)
    return deploys


def _under_load(
    bench: Bench, contender: Contender, settings: Settings, deploy: Deploy, action: Callable[[Bench], None]
) -> None:
    running = load.Running(
        bench.box, load.Load(url(contender, contender.paths[0]), settings.connections, settings.threads)
    )
    try:
        time.sleep(settings.deploy_lead_s)
        began = time.monotonic()
        action(bench)
        deploy.took_s = time.monotonic() - began
        time.sleep(settings.deploy_tail_s)
    finally:
        result = running.stop()
    deploy.result = result
    log.info(
        "  %-28s %-8s %5.1f s  failed %d of %d",
        contender.server,
        deploy.how,
        deploy.took_s,
        result.errors.total,
        result.requests,
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# What `python -m sockact run APP` imports before the app, against what the `uvicorn` command
# imports before the app. Both import the same protocol modules (httptools, uvloop) afterwards.
IMPORTS = {
    "python": "pass",
    "uvicorn": "import uvicorn.main",
    "sockact": "import sockact.__main__, sockact.runtime.main, sockact.runtime.logs, sockact.runtime.listen, "
    "sockact.runtime.notify, sockact.runtime.server, sdnotify",
}


def import_times(bench: Bench, repeats: int) -> dict[str, float]:
    """Median wall time, in ms, of a fresh interpreter doing each import; interleaved to share drift."""
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(repeats):
        for name, code in IMPORTS.items():
            began = time.perf_counter()
            subprocess.run([bench.python, "-c", code], check=True, cwd=bench.root)
            samples[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(times) for name, times in samples.items()}
