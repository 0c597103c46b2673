"""The load generator: wrk inside the box, its results read from the JSON line our Lua scripts print
and from the latency distribution `wrk --latency` prints."""

from __future__ import annotations

import json
import math
import pathlib
import re
import signal
import subprocess
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sockact.box import HarnessError, PrivateSystemd

SCRIPTS = pathlib.Path(__file__).resolve().parent / "wrk"
MARKER = "BENCH "
# "     99%    5.08ms": wrk prints each percentile with 2 decimals in the largest unit that keeps it >= 1.
PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class Errors:
    """wrk's error counters; `connect` counts refused or failed connection attempts, not requests."""

    connect: int = 0
    read: int = 0
    write: int = 0
    status: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout

    def describe(self) -> str:
        kinds = [f"{kind} {count}" for kind, count in asdict(self).items() if count]
        return ", ".join(kinds)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: Errors
    p50_ms: float
    p99_ms: float
    max_ms: float
    p75_ms: float = math.nan  # from `wrk --latency`; absent from runs saved before it was read
    p90_ms: float = math.nan
    per_worker: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrkResult:
        latency = data["latency_us"]
        return cls(
            requests=int(data["requests"]),
            duration_s=data["duration_us"] / 1e6,
            errors=Errors(**data["errors"]),
            p50_ms=latency["p50"] / 1000,
            p99_ms=latency["p99"] / 1000,
            max_ms=latency["max"] / 1000,
            per_worker={str(k): int(v) for k, v in data.get("per_worker", {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


@dataclass(frozen=True)
class Load:
    """One wrk configuration: where to, how many connections, keep-alive or `Connection: close`."""

    url: str
    connections: int = 64
    threads: int = 1
    close: bool = False
    timeout_s: int = 5
    count_workers: bool = False

    def argv(self, seconds: int) -> list[str]:
        script = SCRIPTS / ("fairness.lua" if self.count_workers else "summary.lua")
        argv = [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds}s",
            f"--timeout={self.timeout_s}s",
            "--latency",
            "-s",
            str(script),
        ]
        if self.close:
            argv += ["-H", "Connection: close"]
        return [*argv, self.url]


def parse(stdout: str) -> WrkResult:
    """The JSON line's counts and exact percentiles, with p75 and p90 from wrk's own distribution."""
    result = _summary(stdout)
    distribution = latency_distribution(stdout)
    if not distribution:  # wrk prints none when no request completed
        return result
    for percent, exact in ((50.0, result.p50_ms), (99.0, result.p99_ms)):
        printed, unit_ms = distribution[percent]
        # Both come from one histogram; only wrk's 2-decimal rounding may tell them apart.
        if abs(printed - exact) > 0.005 * unit_ms + 1e-9:
            raise HarnessError(
                f"wrk's p{percent:g} is {printed} ms in its distribution but {exact} ms in "
                f"its Lua summary; its output was:\n{stdout[-2000:]}"
            )
    return replace(result, p75_ms=distribution[75.0][0], p90_ms=distribution[90.0][0])


def _summary(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            return WrkResult.from_json(json.loads(line[len(MARKER) :]))
    raise HarnessError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")


def latency_distribution(stdout: str) -> dict[float, tuple[float, float]]:
    """`wrk --latency`'s "Latency Distribution" block: percent -> (milliseconds, the unit it was
    printed in, in milliseconds). Empty when wrk printed no such block."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Latency Distribution") + 1
    except StopIteration:
        return {}
    found: dict[float, tuple[float, float]] = {}
    for line in lines[start:]:
        match = PERCENTILE.match(line)
        if match is None:
            break
        unit_ms = UNIT_MS[match[3]]
        found[float(match[1])] = (float(match[2]) * unit_ms, unit_ms)
    return found


def run(box: PrivateSystemd, load: Load, seconds: int) -> WrkResult:
    """Load for a fixed time and return what wrk measured."""
    done = box.run(*load.argv(seconds), timeout=seconds + 60)
    return parse(done.stdout)


class Running:
    """wrk started for an open-ended time; stop() ends it with SIGINT, on which wrk still reports."""

    # Longer than any scenario; stop() always comes first.
    LIMIT_S = 600

    def __init__(self, box: PrivateSystemd, load: Load) -> None:
        self.proc = box.popen(*load.argv(self.LIMIT_S), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> WrkResult:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return parse(out + err)
