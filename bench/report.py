"""The outputs: results.md (tables, machine, versions, targets), results.png (matplotlib), results.json."""

from __future__ import annotations

import json
import math
import pathlib
import statistics
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from . import load
from .contenders import HELLO, SLEEP, Contender, deploys_not_measured
from .measure import MODES, Results, cell

HANDLERS = {HELLO: "hello", SLEEP: "await 10 ms"}
FRAMEWORK_INTERFACE = {"FastAPI": "ASGI", "Flask": "WSGI"}
NOT_RUN = "—"
# (app, path, Connection: close?) in the order of the table and the chart; Node rows join the ASGI ones.
GROUPS = [
    (app, path, close)
    for app, path in (("ASGI", HELLO), ("ASGI", SLEEP), ("WSGI", HELLO), ("FastAPI", HELLO), ("Flask", HELLO))
    for close in MODES
]


def serves(contender: Contender, app: str, path: str) -> bool:
    group = "ASGI" if contender.app == "Node" else contender.app
    return path in contender.paths and group == app


def handler(app: str, path: str) -> str:
    return "JSON" if app in FRAMEWORK_INTERFACE else HANDLERS[path]


def app_label(app: str) -> str:
    return f"{app} ({FRAMEWORK_INTERFACE[app]})" if app in FRAMEWORK_INTERFACE else app


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def fairness_ratio(result: load.WrkResult, workers: int) -> float:
    """max/min requests per worker; infinite when a worker served nothing."""
    counts = sorted(result.per_worker.values())
    if len(counts) < workers or not counts or counts[0] == 0:
        return math.inf
    return counts[-1] / counts[0]


class Summary:
    """Per-contender figures aggregated over rounds: medians, bests, ratios."""

    def __init__(self, results: Results, lineup: list[Contender]) -> None:
        self.results = results
        self.lineup = lineup
        self.workers = results.settings.workers

    def runs(self, key: str, path: str, close: bool) -> list[load.WrkResult]:
        return self.results.throughput.get(cell(key, path, close), [])

    def rps(self, key: str, path: str, close: bool) -> float:
        return median(run.rps for run in self.runs(key, path, close))

    def latency(self, key: str, path: str, close: bool, percentile: str) -> float:
        """Median over rounds of one percentile ("p50_ms", "p99_ms")."""
        return median(getattr(run, percentile) for run in self.runs(key, path, close))

    def best_rps(self, key: str, path: str, close: bool) -> float:
        runs = self.runs(key, path, close)
        return max(run.rps for run in runs) if runs else math.nan

    def fairness(self, key: str) -> float:
        return median(fairness_ratio(run, self.workers) for run in self.results.fairness.get(key, []))

    def shares(self, key: str) -> str:
        """Requests per worker of the last round, as percentages of the total."""
        rounds = self.results.fairness.get(key, [])
        if not rounds:
            return NOT_RUN
        counts = sorted(rounds[-1].per_worker.values(), reverse=True)
        counts += [0] * (self.workers - len(counts))  # workers that served nothing
        total = sum(counts) or 1
        return " / ".join(f"{100 * count / total:.0f}%" for count in counts)

    def memory(self, key: str) -> float:
        return median(self.results.memory_mb.get(key, []))

    def cold_start(self, key: str) -> float:
        return median(self.results.cold_start_ms.get(key, []))

    def ratio(self, key: str, other: str, path: str, close: bool) -> float:
        return self.rps(key, path, close) / self.rps(other, path, close)

    def best_ratio(self, key: str, other: str, path: str, close: bool) -> float:
        return self.best_rps(key, path, close) / self.best_rps(other, path, close)


def fmt(value: float, digits: int = 0, unit: str = "") -> str:
    if math.isnan(value):
        return NOT_RUN
    if math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}{unit}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def throughput_table(summary: Summary) -> list[str]:
    rows: list[list[str]] = []
    for app, path, close in GROUPS:
        for contender in summary.lineup:
            if serves(contender, app, path):
                rows.append(_throughput_row(summary, contender, app, path, close, MODES[close]))
    return table(
        ["app", "handler", "connections", "server", "req/s median", "req/s best", "p50 ms", "p99 ms", "errors"], rows
    )


def _throughput_row(summary: Summary, c: Contender, app: str, path: str, close: bool, mode: str) -> list[str]:
    label = app_label(app) if c.app != "Node" else "Node (same app)"
    head = [label, handler(app, path), mode, f"**{c.server}**" if c.server == "sockact" else c.server]
    if c.key in summary.results.unavailable:
        return [*head, f"not available: {summary.results.unavailable[c.key]}", "", "", "", ""]
    runs = summary.runs(c.key, path, close)
    return [
        *head,
        fmt(summary.rps(c.key, path, close)),
        fmt(summary.best_rps(c.key, path, close)),
        fmt(median(r.p50_ms for r in runs), 2),
        fmt(median(r.p99_ms for r in runs), 2),
        str(sum(r.errors.total for r in runs)) if runs else NOT_RUN,
    ]


def peer_column(contender: Contender) -> str:
    """gunicorn's ASGI (uvicorn-worker) and WSGI (sync) rows share a column: one per interface."""
    return "gunicorn" if contender.server.startswith("gunicorn") else contender.server


def versus_table(summary: Summary) -> list[str]:
    """sockact against every Python peer per cell, and against the fastest of them (by median req/s)."""
    peers = [c for c in summary.lineup if c.server != "sockact" and c.app != "Node"]
    columns = list(dict.fromkeys(peer_column(c) for c in peers))
    rows = []
    for app, path, close in GROUPS:
        ours = next((c for c in summary.lineup if c.server == "sockact" and serves(c, app, path)), None)
        if ours is None:
            continue
        theirs = {peer_column(c): c for c in peers if serves(c, app, path)}
        row = [app_label(app), handler(app, path), MODES[close], _figures(summary, ours, path, close)]
        row += [
            _versus(summary, ours, theirs[column], path, close) if column in theirs else NOT_RUN for column in columns
        ]
        fastest = _fastest(summary, list(theirs.values()), path, close)
        row.append(f"{fastest.server}: {_versus(summary, ours, fastest, path, close)}" if fastest else NOT_RUN)
        rows.append(row)
    names = [f"{column} (uvicorn-worker / sync)" if column == "gunicorn" else column for column in columns]
    return table(["app", "handler", "connections", "sockact req/s · p50 · p99", *names, "vs fastest peer"], rows)


def _figures(summary: Summary, c: Contender, path: str, close: bool) -> str:
    return (
        f"{fmt(summary.rps(c.key, path, close))} · {fmt(summary.latency(c.key, path, close, 'p50_ms'), 2)} ms"
        f" · {fmt(summary.latency(c.key, path, close, 'p99_ms'), 2)} ms"
    )


def _versus(summary: Summary, ours: Contender, peer: Contender, path: str, close: bool) -> str:
    """sockact ÷ peer of median req/s, p50 and p99: above 1 is faster for req/s, slower for latency."""
    ratios = [summary.rps(ours.key, path, close) / summary.rps(peer.key, path, close)]
    ratios += [
        summary.latency(ours.key, path, close, p) / summary.latency(peer.key, path, close, p)
        for p in ("p50_ms", "p99_ms")
    ]
    if all(math.isnan(ratio) for ratio in ratios):
        return (
            f"not available: {summary.results.unavailable[peer.key]}"
            if peer.key in summary.results.unavailable
            else NOT_RUN
        )
    return " · ".join(fmt(ratio, 2, "×") for ratio in ratios)


def _fastest(summary: Summary, peers: list[Contender], path: str, close: bool) -> Contender | None:
    measured = [c for c in peers if not math.isnan(summary.rps(c.key, path, close))]
    return max(measured, key=lambda c: summary.rps(c.key, path, close)) if measured else None


def workers_table(summary: Summary) -> list[str]:
    rows = []
    for c in summary.lineup:
        head = [c.server, c.app]
        if c.key in summary.results.unavailable:
            rows.append([*head, f"not available: {summary.results.unavailable[c.key]}", "", "", ""])
            continue
        rows.append(
            [
                *head,
                summary.shares(c.key),
                fmt(summary.fairness(c.key), 2),
                fmt(summary.cold_start(c.key)),
                fmt(summary.memory(c.key), 1),
            ]
        )
    return table(
        [
            "server",
            "app",
            "requests per worker (last round)",
            "max/min (median)",
            "cold start ms",
            "memory per worker MB (PSS)",
        ],
        rows,
    )


def deploys_table(summary: Summary) -> list[str]:
    rows = []
    for c in summary.lineup:
        deploys = summary.results.deploys.get(c.key)
        if deploys is None:
            reason = summary.results.unavailable.get(c.key, deploys_not_measured(c) or "did not complete")
            rows.append([c.server, c.app, f"not run: {reason}", "", "", ""])
            continue
        cells = [c.server, c.app]
        for scenario in ("reload", "restart"):
            cells += _deploy_cells(deploys[scenario])
        rows.append(cells)
    return table(["server", "app", "reload", "failed / completed", "stop + start", "failed / completed"], rows)


def _deploy_cells(deploy: Any) -> list[str]:
    how = f"`{deploy.how}`" if deploy.how else NOT_RUN
    if deploy.unavailable or deploy.result is None:
        return [how, f"not available: {deploy.unavailable}"]
    errors: load.Errors = deploy.result.errors
    detail = f" ({errors.describe()})" if errors.total else ""
    return [how, f"{errors.total}{detail} / {deploy.result.requests:,} in {deploy.took_s:.1f} s"]


def targets(summary: Summary) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) — met is None when it could not be measured."""
    found: list[tuple[str, str, bool | None]] = []
    for other, floor, app_key in (
        ("gunicorn-uvicorn", 1.05, "sockact-asgi"),
        ("uvicorn", 1.0, "sockact-asgi"),
        ("gunicorn-sync", 1.0, "sockact-wsgi"),
    ):
        for close, mode in MODES.items():
            ratio = summary.ratio(app_key, other, HELLO, close)
            best = summary.best_ratio(app_key, other, HELLO, close)
            name = _server_name(summary, other)
            found.append(
                (
                    f"{app_key.split('-')[1].upper()} req/s, {mode}: sockact ≥ {floor:.2f}× {name}",
                    f"{fmt(ratio, 2, '×')} (best rounds: {fmt(best, 2, '×')})",
                    None if math.isnan(ratio) else ratio >= floor,
                )
            )
    for scenario, label in (("reload", "`sockact reload`"), ("restart", "`systemctl restart NAME.target`")):
        deploy = summary.results.deploys.get("sockact-asgi", {}).get(scenario)
        result = deploy.result if deploy and not deploy.unavailable else None
        measured = str(result.errors.total) if result else f"not available: {deploy.unavailable if deploy else ''}"
        found.append(
            (
                f"0 failed requests during {label} under load",
                measured,
                None if result is None else result.errors.total == 0,
            )
        )
    for key in ("sockact-asgi", "sockact-wsgi"):
        ratio = summary.fairness(key)
        found.append(
            (
                f"fairness ({key.split('-')[1].upper()}): max/min requests per worker ≤ 1.2",
                fmt(ratio, 2),
                None if math.isnan(ratio) else ratio <= 1.2,
            )
        )
    extra = summary.memory("sockact-asgi") - summary.memory("uvicorn")
    found.append(
        (
            "memory (PSS) per worker ≤ uvicorn --workers' + 5 MB",
            _signed(extra, 1, "MB"),
            None if math.isnan(extra) else extra <= 5,
        )
    )
    imports = summary.results.imports_ms
    extra_ms = imports.get("sockact", math.nan) - imports.get("uvicorn", math.nan)
    found.append(
        (
            "runtime imports ≤ uvicorn's own + 60 ms",
            _signed(extra_ms, 0, "ms"),
            None if math.isnan(extra_ms) else extra_ms <= 60,
        )
    )
    return found


def _signed(value: float, digits: int, unit: str) -> str:
    if math.isnan(value):
        return NOT_RUN
    return f"{abs(value):.{digits}f} {unit} {'more' if value >= 0 else 'less'}"


def _server_name(summary: Summary, key: str) -> str:
    return next((c.server for c in summary.lineup if c.key == key), key)


def targets_table(summary: Summary) -> list[str]:
    verdict = {True: "met", False: "**missed**", None: "not measured"}
    rows = [[name, value, verdict[met]] for name, value, met in targets(summary)]
    return table(["target", "measured (ratios: of medians)", ""], rows)


def markdown(results: Results, lineup: list[Contender], command: str) -> str:
    summary = Summary(results, lineup)
    s = results.settings
    lines = [
        "# Benchmark results",
        "",
        (
            f"Regenerate with `{command}`. Machine: {results.machine.get('cores')} cores "
            f"({results.machine.get('cpu')}), Linux {results.machine.get('kernel')}, {results.machine.get('date')}."
        ),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in results.versions.items()) + ".",
        "",
        (
            f"Every server runs {s.workers} workers inside one private systemd (one network namespace, loopback). "
            f"Load: wrk, {s.threads} thread, {s.connections} connections, {s.rounds} alternating round(s) of "
            f"{s.seconds} s per cell; medians and bests are over rounds. Node rows serve the same routes and body "
            "for reference."
        ),
        "",
        _background_line(summary),
        "",
        "## Overview",
        "",
        *overview_table(summary),
        "",
        "## sockact against each peer",
        "",
        (
            "Each peer cell is sockact ÷ that peer for median req/s · p50 · p99 over the rounds: above 1× sockact "
            "serves more requests, below 1× its latency is lower. The fastest peer is the one with the most req/s in "
            "that cell. — : the server does not serve that app (uWSGI has no ASGI). Node is left out: it serves "
            "its own app."
        ),
        "",
        *versus_table(summary),
        "",
        "## Requests per second and latency",
        "",
        *throughput_table(summary),
        "",
        "## Fairness, cold start, memory",
        "",
        (
            "Fairness comes from a separate keep-alive pass that counts the `X-Worker` header (the serving PID) "
            "of every response. Cold start: from issuing the start command to the first 200."
        ),
        "",
        *workers_table(summary),
        "",
        "## Reload and restart under load",
        "",
        (
            "Failed requests are wrk's errors while it loads the server through the whole operation "
            "(connect errors count refused connection attempts, which wrk retries at once)."
        ),
        "",
        *deploys_table(summary),
        "",
        "## Targets",
        "",
        _imports_line(results),
        "",
        *targets_table(summary),
        "",
        "![requests per second and p99 latency](results.png)",
        "",
    ]
    return "\n".join(lines)


def _background_line(summary: Summary) -> str:
    results = summary.results
    shares = [share for per_round in results.background.values() for share in per_round]
    if not shares:
        return "Other load on the machine during the run: not measured (no cgroup2 group of its own)."
    worst = max(results.background.items(), key=lambda item: max(item[1]))
    line = (
        f"Other processes, and other guests of the hypervisor (steal time), took {100 * median(shares):.0f}% "
        f"of the machine's CPU (median over contender "
        f"rounds; at most {100 * max(worst[1]):.0f}%, during {_server_name(summary, worst[0])} ({worst[0]}))."
    )
    if max(shares) > 0.05:
        line += " **The machine was not quiet: rounds with other load understate their contender.**"
    return line


def _imports_line(results: Results) -> str:
    imports = results.imports_ms
    if not imports:
        return "Imports were not measured."
    return (
        f"Fresh interpreter, median wall time: `python -c pass` {imports['python']:.0f} ms, importing what "
        f"the `uvicorn` command loads before the app {imports['uvicorn']:.0f} ms, what `python -m sockact run` "
        f"loads before the app {imports['sockact']:.0f} ms."
    )


def chart(results: Results, lineup: list[Contender], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    summary = Summary(results, lineup)
    fig, (rps_axis, p99_axis) = plt.subplots(2, 1, figsize=(16, 8), constrained_layout=True)
    servers = list(dict.fromkeys(c.server for c in lineup))  # sockact's ASGI and WSGI rows share a colour
    colours = {server: plt.get_cmap("tab10")(index) for index, server in enumerate(servers)}
    labelled: set[str] = set()
    lowest_p99 = math.inf
    for g, (app, p, close) in enumerate(GROUPS):
        present = [c for c in lineup if serves(c, app, p) and summary.runs(c.key, p, close)]
        width = 0.8 / max(len(present), 1)
        for slot, c in enumerate(present):
            x = g + (slot - (len(present) - 1) / 2) * width
            label = None if c.server in labelled else c.server
            labelled.add(c.server)
            rps_axis.bar(x, summary.rps(c.key, p, close), width, color=colours[c.server], label=label)
            rps_axis.scatter([x], [summary.best_rps(c.key, p, close)], marker="_", color="black", s=80, zorder=3)
            p99 = median(r.p99_ms for r in summary.runs(c.key, p, close))
            p99_axis.bar(x, p99, width, color=colours[c.server])
            lowest_p99 = min(lowest_p99, p99)
    names = [
        f"{'ASGI / Node' if app == 'ASGI' else app}\n{handler(app, p)}\n{MODES[close]}" for app, p, close in GROUPS
    ]
    for axis, title in ((rps_axis, "requests/s (bar: median, tick: best)"), (p99_axis, "p99 latency, ms (median)")):
        axis.set_xticks(range(len(GROUPS)), names)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    p99_axis.set_yscale("log")
    if math.isfinite(lowest_p99):
        p99_axis.set_ylim(bottom=lowest_p99 / 2)  # so the shortest bar still shows
    # Readable ticks on the log axis: 0.5, 1, 2, 5, 10, 20, 50, ... ms.
    p99_axis.yaxis.set_major_locator(FixedLocator([m * 10.0**e for e in range(-1, 5) for m in (1, 2, 5)]))
    p99_axis.yaxis.set_major_formatter(ScalarFormatter())
    p99_axis.yaxis.set_minor_formatter(NullFormatter())
    rps_axis.legend(fontsize=8, ncol=3, loc="upper right")
    s = results.settings
    fig.suptitle(
        f"{s.workers} workers each, {results.machine.get('cores')} cores, wrk -c{s.connections}, "
        f"{s.rounds} round(s) × {s.seconds} s"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


# docs/benchmarks.md holds the overview between these markers; bench/run rewrites it after a full run.
BLOCK_START = "<!-- bench results: written by bench/run -->"
BLOCK_END = "<!-- end of bench results -->"


def overview_table(summary: Summary) -> list[str]:
    """One row per server: the figures a reader compares first; the details are in results.md."""
    rows = []
    for c in summary.lineup:
        if c.key in summary.results.unavailable:
            rows.append([c.server, c.app, f"not available: {summary.results.unavailable[c.key]}", *[""] * 9])
            continue
        deploys = summary.results.deploys.get(c.key, {})
        rows.append(
            [
                f"**{c.server}**" if c.server == "sockact" else c.server,
                c.app,
                fmt(summary.rps(c.key, HELLO, False)),
                fmt(summary.rps(c.key, HELLO, True)),
                fmt(summary.rps(c.key, SLEEP, False)) if SLEEP in c.paths else NOT_RUN,
                fmt(summary.latency(c.key, HELLO, False, "p50_ms"), 2),
                fmt(summary.latency(c.key, HELLO, False, "p99_ms"), 2),
                fmt(summary.fairness(c.key), 2),
                *(_failed(deploys.get(scenario)) for scenario in ("reload", "restart")),
                fmt(summary.cold_start(c.key)),
                fmt(summary.memory(c.key), 1),
            ]
        )
    return table(
        [
            "server",
            "app",
            "req/s keep-alive",
            "req/s close",
            "req/s, await 10 ms",
            "p50 ms",
            "p99 ms",
            "max/min per worker",
            "failed in reload",
            "failed in stop+start",
            "cold start ms",
            "PSS/worker MB",
        ],
        rows,
    )


def _failed(deploy: Any) -> str:
    if deploy is None:
        return NOT_RUN
    if deploy.unavailable or deploy.result is None:
        return "n/a"
    return str(deploy.result.errors.total)


def results_block(results: Results, lineup: list[Contender]) -> str:
    """The overview for docs/benchmarks.md; its links are relative to docs/."""
    s = results.settings
    return "\n".join(
        [
            BLOCK_START,
            (
                f"{s.workers} workers per server on {results.machine.get('cores')} cores "
                f"({results.machine.get('cpu')}); "
                f"wrk with {s.connections} connections; medians of {s.rounds} alternating rounds of {s.seconds} s. "
                "Node rows serve the same app for reference. Failed requests are wrk's errors under load, refused "
                "connections included. Versions, latency, per-worker shares and the targets: "
                "[bench/results.md](../bench/results.md)."
            ),
            "",
            *overview_table(Summary(results, lineup)),
            "",
            "sockact ÷ each peer (median req/s · p50 · p99; above 1× more requests, below 1× lower latency):",
            "",
            *versus_table(Summary(results, lineup)),
            "",
            "![requests per second and p99 latency](../bench/results.png)",
            BLOCK_END,
        ]
    )


def update_block(page: pathlib.Path, block: str) -> bool:
    """Replace the marked block in a Markdown page; False (and no change) when it has no markers."""
    text = page.read_text() if page.exists() else ""
    if BLOCK_START not in text or BLOCK_END not in text:
        return False
    head, rest = text.split(BLOCK_START, 1)
    page.write_text(head + block + rest.split(BLOCK_END, 1)[1])
    return True


def to_json(results: Results) -> dict[str, Any]:
    def runs(table_: dict[str, list[load.WrkResult]]) -> dict[str, list[dict[str, Any]]]:
        return {key: [r.to_json() for r in rs] for key, rs in table_.items()}

    data = asdict(results)
    data["throughput"] = runs(results.throughput)
    data["fairness"] = runs(results.fairness)
    return data


def write(results: Results, lineup: list[Contender], out: pathlib.Path, command: str) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.md", out / "results.png", out / "results.json"]
    paths[0].write_text(markdown(results, lineup, command))
    chart(results, lineup, paths[1])
    paths[2].write_text(json.dumps(to_json(results), indent=1, default=str) + "\n")
    return paths
