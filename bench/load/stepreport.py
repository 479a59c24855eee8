"""The step plan of the load test and the per-step report: pure functions, no locust, no I/O
besides the writers at the end (so the unit tests can drive them with synthetic samples).

A run offers the load in steps. Step *i* runs ``users[i]`` locust users, each sending
``user_rate`` requests/s (``constant_throughput``), for ``step_seconds``; the first
``settle_seconds`` of each step (users starting, connections opening) are not measured. Every
request is one sample: when it was sent, how long it took, whether it succeeded, which operation.
The CPU sampler records cumulative CPU seconds (server, database, load generator, whole machine)
every half second; a step's CPU is the difference across its measured window.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One load level: ``users`` users at ``user_rate`` requests/s each."""

    index: int
    users: int
    user_rate: float
    seconds: float
    settle: float

    @property
    def offered_rps(self) -> float:
        return self.users * self.user_rate


def plan(
    rates: Sequence[float], user_rate: float, step_seconds: float, settle_seconds: float
) -> list[Step]:
    """Steps for the requested offered rates (requests/s), rounded up to whole users."""
    if user_rate <= 0:
        raise ValueError("user_rate must be positive")
    if not 0 <= settle_seconds < step_seconds:
        raise ValueError("settle_seconds must be at least 0 and shorter than step_seconds")
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError("give at least one positive rate")
    return [
        Step(index, users, user_rate, step_seconds, settle_seconds)
        for index, rate in enumerate(rates)
        for users in [max(1, math.ceil(rate / user_rate - 1e-9))]
    ]


def parse_rates(text: str) -> list[float]:
    """``"50,100,200"`` → ``[50.0, 100.0, 200.0]``."""
    rates = [float(part) for part in text.replace(" ", "").split(",") if part]
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"expected comma-separated positive rates, got {text!r}")
    return rates


def step_at(steps: Sequence[Step], elapsed: float) -> Step | None:
    """The step running ``elapsed`` seconds after the start; None once the plan is over."""
    start = 0.0
    for step in steps:
        if elapsed < start + step.seconds:
            return step
        start += step.seconds
    return None


@dataclass(frozen=True)
class Window:
    """The measured part of a step, in wall-clock seconds (``time.time()``)."""

    index: int
    users: int
    offered_rps: float
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def windows(steps: Sequence[Step], t0: float) -> list[Window]:
    """Measured windows of the steps of a run that started at wall-clock ``t0``."""
    result = []
    start = t0
    for step in steps:
        result.append(
            Window(
                step.index, step.users, step.offered_rps, start + step.settle, start + step.seconds
            )
        )
        start += step.seconds
    return result


# --- samples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request: sent at ``start`` (wall clock, s), answered after ``ms``."""

    start: float
    ms: float
    ok: bool
    name: str
    error: str = ""


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds at wall-clock time ``t``; None where not measured."""

    t: float
    server: float | None
    database: float | None
    client: float | None
    busy: float  # the whole machine: every core's non-idle time


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty): the smallest value
    with at least ``fraction`` of the values at or below it."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


@dataclass
class CpuUse:
    """Average cores busy over a window."""

    server: float | None = None
    database: float | None = None
    client: float | None = None
    other: float | None = None
    machine: float | None = None


def cpu_between(readings: Sequence[CpuReading], start: float, end: float) -> CpuUse:
    """Cores used between the first reading at or after ``start`` and the last at or before
    ``end``; empty when fewer than two readings fall in the window."""
    inside = [reading for reading in readings if start <= reading.t <= end]
    if len(inside) < 2 or inside[-1].t <= inside[0].t:
        return CpuUse()
    first, last = inside[0], inside[-1]
    wall = last.t - first.t

    def cores(name: str) -> float | None:
        before: float | None = getattr(first, name)
        after: float | None = getattr(last, name)
        if before is None or after is None:
            return None
        return max(after - before, 0.0) / wall

    use = CpuUse(
        server=cores("server"),
        database=cores("database"),
        client=cores("client"),
        machine=cores("busy"),
    )
    if use.machine is not None:
        known = sum(value for value in (use.server, use.database, use.client) if value is not None)
        use.other = max(use.machine - known, 0.0)
    return use


@dataclass
class OperationResult:
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float


@dataclass
class StepResult:
    """What one step measured. ``rps`` counts every request sent in the window, answered or
    failed; ``error_rate`` is failed / sent."""

    step: int
    users: int
    offered_rps: float
    seconds: float
    requests: int
    errors: int
    rps: float
    error_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu: CpuUse = field(default_factory=CpuUse)
    operations: dict[str, OperationResult] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepResult:
        values = dict(data)
        values["cpu"] = CpuUse(**values.get("cpu", {}))
        values["operations"] = {
            name: OperationResult(**op) for name, op in values.get("operations", {}).items()
        }
        return cls(**values)


def aggregate(
    samples: Iterable[Sample],
    step_windows: Sequence[Window],
    readings: Sequence[CpuReading] = (),
) -> list[StepResult]:
    """One result per window: the samples sent inside it (others — settling, between steps —
    are left out) and the CPU used across it."""
    buckets: list[list[Sample]] = [[] for _ in step_windows]
    ordered = sorted(range(len(step_windows)), key=lambda i: step_windows[i].start)
    for sample in samples:
        for i in ordered:
            window = step_windows[i]
            if window.start <= sample.start < window.end:
                buckets[i].append(sample)
                break
    results = []
    for window, bucket in zip(step_windows, buckets, strict=True):
        latencies = sorted(sample.ms for sample in bucket)
        errors = sum(1 for sample in bucket if not sample.ok)
        operations: dict[str, OperationResult] = {}
        for name in sorted({sample.name for sample in bucket}):
            own = sorted(sample.ms for sample in bucket if sample.name == name)
            operations[name] = OperationResult(
                requests=len(own),
                errors=sum(1 for sample in bucket if sample.name == name and not sample.ok),
                p50_ms=percentile(own, 0.50),
                p99_ms=percentile(own, 0.99),
            )
        kinds = Counter(sample.error or "failed" for sample in bucket if not sample.ok)
        results.append(
            StepResult(
                step=window.index,
                users=window.users,
                offered_rps=window.offered_rps,
                seconds=window.seconds,
                requests=len(bucket),
                errors=errors,
                rps=len(bucket) / window.seconds if window.seconds > 0 else math.nan,
                error_rate=errors / len(bucket) if bucket else math.nan,
                p50_ms=percentile(latencies, 0.50),
                p90_ms=percentile(latencies, 0.90),
                p99_ms=percentile(latencies, 0.99),
                max_ms=latencies[-1] if latencies else math.nan,
                cpu=cpu_between(readings, window.start, window.end),
                operations=operations,
                error_kinds=dict(kinds.most_common()),
            )
        )
    return results


# --- output --------------------------------------------------------------------------------


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def markdown_table(results: Sequence[StepResult], cpu_request_cores: float | None = None) -> str:
    """The per-step table. With ``cpu_request_cores`` (the chart's CPU request) a column gives
    the server's CPU as the HPA sees it: % of the request."""
    header = (
        "| step | users | offered req/s | req/s | p50 | p99 | errors | server CPU (cores)"
        + (" | CPU % of request" if cpu_request_cores else "")
        + " | DB CPU | load generator CPU | other CPU |"
    )
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cpu_request_cores else "")
    rule += "---:|---:|---:|"
    lines = [header, rule]
    for result in results:
        error = "n/a" if math.isnan(result.error_rate) else f"{result.error_rate:.2%}"
        row = (
            f"| {result.step + 1} | {result.users} | {result.offered_rps:,.0f} | "
            f"{result.rps:,.1f} | {_ms(result.p50_ms)} | {_ms(result.p99_ms)} | "
            f"{error} ({result.errors}) | {_cores(result.cpu.server)}"
        )
        if cpu_request_cores:
            server = result.cpu.server
            row += " | n/a" if server is None else f" | {server / cpu_request_cores:.0%}"
        row += (
            f" | {_cores(result.cpu.database)} | {_cores(result.cpu.client)} "
            f"| {_cores(result.cpu.other)} |"
        )
        lines.append(row)
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "step",
    "users",
    "offered_rps",
    "seconds",
    "requests",
    "errors",
    "rps",
    "error_rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "server_cores",
    "database_cores",
    "client_cores",
    "other_cores",
)


def write_csv(path: Path, results: Sequence[StepResult]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for r in results:
            writer.writerow(
                [
                    r.step + 1,
                    r.users,
                    f"{r.offered_rps:g}",
                    f"{r.seconds:.1f}",
                    r.requests,
                    r.errors,
                    f"{r.rps:.2f}",
                    f"{r.error_rate:.5f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p90_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    f"{r.max_ms:.1f}",
                    *("" if v is None else f"{v:.3f}" for v in _cpu_values(r.cpu)),
                ]
            )


def _cpu_values(cpu: CpuUse) -> tuple[float | None, ...]:
    return (cpu.server, cpu.database, cpu.client, cpu.other)
