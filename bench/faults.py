"""`python -m bench.faults` (`bench/run --faults`): the same faults against every server, one table.

Each fault runs against a fresh start of each server (2 workers) inside one private systemd, with a
bounded wrk load on the fault's route and a probe that opens a new connection every 0.1 s and does one
GET with a 2 s timeout: what a new visitor sees. After the fault the server gets a while to serve new
visitors again by itself; if it does not, the bench does what an operator would (and says so).
Writes faults.md and faults.json beside this file (or --out) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sockact.box import HarnessError, PrivateSystemd, unavailable_reason

from . import load
from .contenders import Bench, NotAvailable
from .faults_servers import WORKERS, Server, lineup

log = logging.getLogger("bench.faults")
HERE = pathlib.Path(__file__).resolve().parent
CLIENTS = str(HERE / "faults_clients.py")  # copied under the bench root by stage(), where the box can read it
LOAD_CONNECTIONS = 4
SERVED_AGAIN_IN_A_ROW = 10  # consecutive GETs that count as "new visitors are served again"


@dataclass(frozen=True)
class Timing:
    """How long and how hard each fault runs; quick() shrinks it for the smoke test."""

    lead_s: float = 1.0  # load and probes before the fault begins
    tail_s: float = 2.0  # and after it ends
    crash_count: int = 100
    crash_every_s: float = 0.3
    flood_connections: int = 5000
    flood_hold_s: float = 10.0
    hang_s: float = 33.0
    hang_every_s: float = 0.25
    grow_mb: int = 300
    grow_watch_s: float = 10.0
    journal_stop_s: float = 8.0
    # Bytes each /log request writes: a request dump or a short traceback. With 60-byte lines the
    # load writes too little in 8 s to fill the journal stream's buffers (about 4 MB here).
    log_bytes: int = 1000
    shm_watch_s: float = 8.0
    recover_s: float = 15.0  # time a server gets to serve again by itself after the fault

    @classmethod
    def quick(cls) -> Timing:
        return cls(
            lead_s=0.5,
            tail_s=1.0,
            crash_count=20,
            flood_connections=500,
            flood_hold_s=3.0,
            hang_s=6.0,
            grow_mb=50,
            grow_watch_s=3.0,
            journal_stop_s=3.0,
            shm_watch_s=3.0,
            recover_s=10.0,
        )


@dataclass
class Row:
    fault: str
    server: str
    answered: int = 0
    probes: int = 0
    longest_outage_s: float = 0.0
    acted: str = ""
    detail: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # probe failures by kind
    load: dict[str, Any] = field(default_factory=dict)  # wrk's figures during the fault
    unavailable: str = ""


@dataclass
class Seen:
    """What one fault run produced before the recovery check."""

    probe: dict[str, Any]
    wrk: load.WrkResult | None
    detail: str
    memory: tuple[float, float, float] | None = None  # RSS MiB: before, grown, after the watch
    undo: Callable[[], None] | None = None  # ends the fault, after the recovery check


class Window:
    """The bounded wrk load and the probe of one fault, started together."""

    def __init__(self, bench: Bench, server: Server, path: str, seconds: float) -> None:
        self.seconds = seconds
        self.began = time.monotonic()
        self.wrk = load.Running(
            bench.box, load.Load(f"http://127.0.0.1:{server.port}{path}", LOAD_CONNECTIONS, 1, timeout_s=2)
        )
        self.probe = bench.box.popen(
            bench.python,
            CLIENTS,
            "probe",
            str(server.port),
            path,
            str(seconds),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def at(self, offset_s: float) -> None:
        """Sleep until offset_s into the window: the faults follow a schedule."""
        left = self.began + offset_s - time.monotonic()
        if left > 0:
            time.sleep(left)

    def finish(self) -> tuple[dict[str, Any], load.WrkResult | None]:
        try:
            out, err = self.probe.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.probe.kill()
            out, err = self.probe.communicate()
        finally:
            wrk = _stop_wrk(self.wrk)
        if self.probe.returncode != 0 or not out.strip():
            raise HarnessError(f"the probe failed: {err.strip()[-500:]}")
        return json.loads(out.strip().splitlines()[-1]), wrk


def _stop_wrk(running: load.Running) -> load.WrkResult | None:
    try:
        return running.stop()
    except HarnessError:  # wrk may print no summary when every connection failed
        return None


def _clients(bench: Bench, *args: str, timeout: float) -> dict[str, Any]:
    done = bench.box.run(bench.python, CLIENTS, *args, timeout=timeout)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---- the faults -------------------------------------------------------------------------------------


def crash(bench: Bench, server: Server, t: Timing) -> Seen:
    """A route that makes the worker exit, hit crash_count times, one every crash_every_s."""
    span = t.crash_count * t.crash_every_s
    window = Window(bench, server, "/", t.lead_s + span + t.tail_s)
    window.at(t.lead_s)
    hits = _clients(
        bench, "hit", str(server.port), "/crash", str(t.crash_count), str(t.crash_every_s), timeout=span + 30
    )
    probe, wrk = window.finish()
    return Seen(probe, wrk, f"{t.crash_count} GET /crash in {span:.0f} s ({_outcomes(hits)})")


def fd_flood(bench: Bench, server: Server, t: Timing) -> Seen:
    """flood_connections idle keep-alive connections, one complete request each, held flood_hold_s."""
    window = Window(bench, server, "/", t.lead_s + t.flood_hold_s + t.tail_s)
    window.at(t.lead_s)
    flood = _clients(
        bench, "flood", str(server.port), str(t.flood_connections), str(t.flood_hold_s), timeout=t.flood_hold_s + 60
    )
    probe, wrk = window.finish()
    detail = (
        f"{flood['sent']} of {flood['count']} connections got their request out, {flood['answered']} "
        f"answered, {flood['closed_by_server']} closed by the server, {flood['open_at_end']} open "
        f"after {flood['seconds']:g} s"
    )
    return Seen(probe, wrk, detail)


def hang(bench: Bench, server: Server, t: Timing) -> Seen:
    """Requests to a route that never returns, 2 per worker, the connections held open throughout."""
    count = 2 * WORKERS
    window = Window(bench, server, "/", t.hang_s)
    window.at(t.lead_s)
    hits = bench.box.popen(
        bench.python,
        CLIENTS,
        "hit",
        str(server.port),
        "/hang",
        str(count),
        str(t.hang_every_s),
        "--hold",
        str(t.hang_s - t.lead_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        probe, wrk = window.finish()
    finally:
        try:
            hits.communicate(timeout=t.hang_s + 30)
        except subprocess.TimeoutExpired:
            hits.kill()
            hits.communicate()
    return Seen(probe, wrk, f"{count} GET /hang from {t.lead_s:g} s; {_served_again(probe, t.lead_s)}")


def memory(bench: Bench, server: Server, t: Timing) -> Seen:
    """One request grows a worker by grow_mb MiB; is the memory given back within grow_watch_s?"""
    window = Window(bench, server, "/", t.lead_s + t.grow_watch_s + t.tail_s)
    window.at(t.lead_s)
    before = server.rss_mb(bench)
    bench.box.run(
        "curl",
        "-sS",
        "-m",
        "30",
        "-o",
        "/dev/null",
        f"http://127.0.0.1:{server.port}/grow?mb={t.grow_mb}",
        check=False,
        timeout=40,
    )
    grown = server.rss_mb(bench)
    window.at(t.lead_s + t.grow_watch_s)
    after = server.rss_mb(bench)
    probe, wrk = window.finish()
    detail = (
        f"GET /grow?mb={t.grow_mb}: RSS of all its processes {before:.0f} → {grown:.0f} MiB, "
        f"{after:.0f} MiB {t.grow_watch_s:g} s later"
    )
    return Seen(probe, wrk, detail, (before, grown, after))


def frozen_journal(bench: Bench, server: Server, t: Timing) -> Seen:
    """SIGSTOP to the box's journald for journal_stop_s while every request logs a line to stderr."""
    path = f"/log?bytes={t.log_bytes}"
    window = Window(bench, server, path, t.lead_s + t.journal_stop_s + t.tail_s)
    window.at(t.lead_s)
    journald = "systemd-journald.service"
    bench.box.systemctl("kill", "--kill-who=main", "--signal=SIGSTOP", journald)
    try:
        window.at(t.lead_s + t.journal_stop_s)
    finally:
        bench.box.systemctl("kill", "--kill-who=main", "--signal=SIGCONT", journald)
    probe, wrk = window.finish()
    return Seen(
        probe,
        wrk,
        f"journald stopped from {t.lead_s:g} s to {t.lead_s + t.journal_stop_s:g} s; "
        f"the load and the probes GET {path}",
    )


SHM_FILL = "/dev/shm/bench-faults-fill"
SHM_SIZE = "64m"  # the box's /dev/shm, shrunk at boot so filling it is quick


def shm_full_kill(bench: Bench, server: Server, t: Timing) -> Seen:
    """/dev/shm filled to the last byte, then SIGKILL to one worker: does its replacement serve?

    /dev/shm stays full through the recovery check; it is emptied afterwards."""
    window = Window(bench, server, "/", t.lead_s + t.shm_watch_s + t.tail_s)
    window.at(t.lead_s)

    def undo() -> None:
        bench.box.run("rm", "-f", SHM_FILL, check=False)

    try:
        bench.box.run("dd", "if=/dev/zero", f"of={SHM_FILL}", "bs=1M", check=False, timeout=30)
        free = bench.box.run("df", "--output=avail", "-k", "/dev/shm").stdout.split()[-1]
        victim = server.worker_pid(bench)
        bench.box.run("kill", "-9", str(victim))
        window.at(t.lead_s + t.shm_watch_s)
        probe, wrk = window.finish()
    except BaseException:
        undo()
        raise
    detail = (
        f"/dev/shm filled ({free} KiB left) at {t.lead_s:g} s, then worker {victim} killed (SIGKILL); "
        "still full during the recovery check"
    )
    return Seen(probe, wrk, detail, undo=undo)


FAULTS: dict[str, tuple[str, Callable[[Bench, Server, Timing], Seen]]] = {
    "crash": ("crash URL (os._exit / process.exit)", crash),
    "flood": ("fd flood (idle keep-alive connections)", fd_flood),
    "hang": ("hung handlers", hang),
    "memory": ("memory growth", memory),
    "journal": ("frozen journal", frozen_journal),
    "shm": ("full /dev/shm + kill -9 of a worker", shm_full_kill),
}


# ---- reading what was seen ----------------------------------------------------------------------------


def longest_failed_run(ok: list[bool]) -> int:
    longest = current = 0
    for answered in ok:
        current = 0 if answered else current + 1
        longest = max(longest, current)
    return longest


def _served_again(probe: dict[str, Any], fault_at_s: float) -> str:
    ok: list[bool] = probe["ok"]
    every = probe["every_s"]
    failed = [i for i, answered in enumerate(ok) if not answered]
    if not failed:
        return "every probe answered"
    last = failed[-1]
    if last == len(ok) - 1:
        return f"new visitors not served again within {len(ok) * every - fault_at_s:.0f} s"
    return f"served again {(last + 1) * every - fault_at_s:.1f} s after the first hung request"


def _outcomes(hits: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(hits["outcomes"].items()))


def serves_again(bench: Bench, server: Server, within_s: float) -> bool:
    """SERVED_AGAIN_IN_A_ROW consecutive GETs on new connections answered, within within_s."""
    deadline = time.monotonic() + within_s
    in_a_row = 0
    while time.monotonic() < deadline:
        in_a_row = in_a_row + 1 if bench.get(server.port) is None else 0
        if in_a_row >= SERVED_AGAIN_IN_A_ROW:
            return True
        time.sleep(0.05)
    return False


def who_acted(bench: Bench, server: Server, t: Timing, seen: Seen) -> str:
    if seen.memory is not None:
        before, grown, after = seen.memory
        if grown - before < t.grow_mb / 2:
            return "nobody (the growth never showed in RSS)"
        if after - before < t.grow_mb / 2:
            return "nobody (memory given back)"
        took = operator_acts(bench, server.memory_operator_act)
        serving = serves_again(bench, server, 30)
        return f"operator ran `{server.memory_operator}` ({took}; RSS then {server.rss_mb(bench):.0f} MiB)" + (
            "" if serving else ": still not serving"
        )
    if serves_again(bench, server, t.recover_s):
        return "nobody"
    took = operator_acts(bench, server.operator_act)
    if serves_again(bench, server, 30):
        return f"operator ran `{server.operator}` ({took})"
    return f"operator ran `{server.operator}` ({took}): still not serving"


def operator_acts(bench: Bench, act: Callable[[Bench], None]) -> str:
    """Run what the operator would, and say how long it took."""
    began = time.monotonic()
    act(bench)
    return f"took {time.monotonic() - began:.1f} s"


def run_fault(bench: Bench, server: Server, fault: str, t: Timing) -> Row:
    label, action = FAULTS[fault]
    row = Row(fault=label, server=server.name)
    try:
        server.start(bench)
        seen = action(bench, server, t)
        ok: list[bool] = seen.probe["ok"]
        row.answered, row.probes = sum(ok), len(ok)
        row.longest_outage_s = round(longest_failed_run(ok) * seen.probe["every_s"], 1)
        for why in seen.probe["why"]:
            if why:
                row.failures[why] = row.failures.get(why, 0) + 1
        if seen.wrk is not None:
            row.load = {
                "requests": seen.wrk.requests,
                "errors": seen.wrk.errors.total,
                "seconds": round(seen.wrk.duration_s, 1),
            }
        row.detail = seen.detail
        try:
            row.acted = who_acted(bench, server, t, seen)
        finally:
            if seen.undo is not None:
                seen.undo()
    except (NotAvailable, HarnessError, subprocess.SubprocessError, OSError) as exc:
        row.unavailable = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.warning("  %s: %s", server.name, row.unavailable)
    finally:
        server.stop(bench)
    log.info(
        "  %-26s answered %d/%d, longest outage %.1f s, %s",
        server.name,
        row.answered,
        row.probes,
        row.longest_outage_s,
        row.acted or row.unavailable,
    )
    return row


# ---- the report --------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | server | probes answered | longest outage | who had to act | what happened |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.unavailable:
            lines.append(f"| {row.fault} | {row.server} | – | – | – | not run: {row.unavailable} |")
            continue
        failures = ", ".join(f"{kind} {n}" for kind, n in sorted(row.failures.items()))
        wrk = (
            f"; load: {row.load['requests']} requests, {row.load['errors']} errors"
            if row.load
            else "; load: wrk reported nothing"
        )
        lines.append(
            f"| {row.fault} | {row.server} | {row.answered} of {row.probes} | "
            f"{row.longest_outage_s:.1f} s | {row.acted} | {row.detail}"
            f"{f'; failed probes: {failures}' if failures else ''}{wrk} |"
        )
    return "\n".join(lines)


def markdown(rows: list[Row], servers: list[Server], t: Timing, meta: dict[str, Any], command: str) -> str:
    how = "\n".join(f"- **{s.name}**: {s.config}" for s in servers)
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    return f"""# Faults: what a new visitor sees

`{command}`, {meta.get("date", "")}, {meta.get("cores", "?")} cores, {WORKERS} workers per server, all inside
one private systemd on loopback. Per fault and server: a fresh start, a wrk load ({LOAD_CONNECTIONS}
connections) on the fault's route, and a probe that opens a new connection every 0.1 s and does one GET with a
2 s timeout. *Longest outage* is the longest run of consecutive failed probes. *Who had to act*: after the
fault, {SERVED_AGAIN_IN_A_ROW} answered GETs in a row within {t.recover_s:g} s count as served again by
itself ("nobody"); otherwise the bench ran what an operator would, and the row says what. Memory growth
asks instead whether the grown worker's memory was given back {t.grow_watch_s:g} s later.

{table(rows)}

## How each server ran

Every server is installed as on a host, under systemd:

{how}

## The faults

- crash URL: {t.crash_count} × GET /crash, one every {t.crash_every_s:g} s; the worker exits (`os._exit(1)`,
  `process.exit(1)`).
- fd flood: {t.flood_connections} connections from one client (its own RLIMIT_NOFILE raised), each sends
  one complete keep-alive request and then stays idle for {t.flood_hold_s:g} s.
- hung handlers: {2 * WORKERS} × GET /hang (a blocking `time.sleep` in the ASGI handler, a busy loop in
  Node), connections held open, probes for {t.hang_s:g} s.
- memory growth: one GET /grow?mb={t.grow_mb} keeps {t.grow_mb} MiB in one worker.
- frozen journal: `kill -STOP` of the box's journald for {t.journal_stop_s:g} s while every request to
  /log writes a {t.log_bytes}-byte line to stderr (PM2 writes app output to its own files, not to the journal).
- full /dev/shm + kill -9: the box's /dev/shm ({SHM_SIZE}) filled by one file, then SIGKILL to one worker;
  probes for {t.shm_watch_s:g} s after, and /dev/shm stays full until the recovery check is over.

Versions: {versions}.
"""


def write(
    rows: list[Row], servers: list[Server], t: Timing, meta: dict[str, Any], out: pathlib.Path, command: str
) -> str:
    text = markdown(rows, servers, t, meta, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.md").write_text(text)
    data = {
        "timing": asdict(t),
        "workers": WORKERS,
        "meta": meta,
        "rows": [asdict(row) for row in rows],
        "servers": {s.key: s.config for s in servers},
    }
    (out / "faults.json").write_text(json.dumps(data, indent=1) + "\n")
    return text


# ---- running it all ------------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run --faults", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short faults (smoke test)")
    parser.add_argument(
        "--only", action="append", metavar="SERVER", help="only these servers: sockact, gunicorn, uvicorn, node, pm2"
    )
    parser.add_argument("--fault", action="append", choices=list(FAULTS), help="only these faults")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="where faults.md/.json go")
    return parser.parse_args(argv)


def stage(root: pathlib.Path) -> None:
    """wrk's scripts and the clients under root: the box's /tmp and /run are its own."""
    global CLIENTS
    from .__main__ import stage_scripts

    stage_scripts(root)
    target = root / "scripts" / "faults_clients.py"
    shutil.copy(HERE / "faults_clients.py", target)
    target.chmod(0o644)
    CLIENTS = str(target)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    reason = unavailable_reason()
    if reason is not None:
        sys.stderr.write(f"bench: {reason}\n")
        return 1
    timing = Timing.quick() if args.quick else Timing()
    root = pathlib.Path(os.environ.get("SOCKACT_BENCH_ROOT", "/opt/sockact-bench"))
    stage(root)
    faults = args.fault or list(FAULTS)
    rows: list[Row] = []
    from .__main__ import machine, versions

    with PrivateSystemd() as box, tempfile.TemporaryDirectory(prefix="sockact-faults-") as logs:
        bench = Bench(box=box, root=root, repo=HERE.parent, workers=WORKERS, logs=pathlib.Path(logs))
        servers = [s for s in lineup(bench) if not args.only or s.key in args.only]
        meta: dict[str, Any] = {**machine(), "versions": versions(bench)}
        if "shm" in faults:
            box.run("mount", "-o", f"remount,size={SHM_SIZE}", "/dev/shm")
        for server in servers:
            try:
                server.install(bench)
            except (NotAvailable, HarnessError, OSError) as exc:
                rows += [Row(FAULTS[f][0], server.name, unavailable=str(exc)[:300]) for f in faults]
        installed = [s for s in servers if not any(r.server == s.name for r in rows)]
        for fault in faults:
            log.info("fault: %s", FAULTS[fault][0])
            rows += [run_fault(bench, server, fault, timing) for server in installed]
    order = {FAULTS[f][0]: i for i, f in enumerate(faults)}
    rows.sort(key=lambda r: order[r.fault])
    command = "bench/run --faults" + (" --quick" if args.quick else "")
    write(rows, servers, timing, meta, args.out, command)
    print(table(rows))
    log.info("wrote %s and %s", args.out / "faults.md", args.out / "faults.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
