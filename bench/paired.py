"""Requests/s of pcf-api configurations measured in alternation, for effects smaller than the
machine's drift (the cost of metrics and tracing): a ratio per round, against the first variant.

    .venv/bin/python bench/paired.py [--database sqlite] [--query notes] [--rounds 40]
        [--duration 5] [--variants no-metrics,tracing-0.1]

``bench/graphql.py`` starts each server afresh and measures it for a few seconds; on a shared
2-core machine requests/s drift by ±10 % between its measurements, as much as the effect asked
about. Here every variant's server runs at once (the same seeded database and settings as
``bench/graphql.py``, variants named as in ``bench/instructions.py``), and round after round each
gets a ``wrk -t2 -c50`` slice of ``--duration`` seconds on the query in turn, after a pause in
which the previous server's background work (span exports) ends; the order rotates every round.
A drift slower than a round moves every slice of that round alike, so the per-round ratio
(variant / first variant) spreads far less than the requests/s do, and its median and mean over
many rounds, with the mean's standard error, say how large the effect is and how sure that is.
Server CPU per request (user + system, from /proc) is reported beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
WARMUP_SECONDS = 3
PAUSE_SECONDS = 2.0
CONNECTIONS = 50


def _load(name: str, module_name: str) -> ModuleType:
    """A sibling script, loaded by path (as ``graphql`` it would shadow graphql-core)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / name)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench/{name} not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


instructions = _load("instructions.py", "bench_instructions")
bench = instructions.bench


@dataclass(frozen=True)
class Slice:
    """One variant's measurement in one round."""

    rps: float
    cpu_us_per_request: float


@dataclass(frozen=True)
class Summary:
    median_rps: float
    median_cpu_us: float
    paired_median: float  # of the per-round ratios variant / reference, minus 1
    paired_mean: float
    standard_error: float  # of paired_mean


def rotation(labels: list[str], round_number: int) -> list[str]:
    """The order of round ``round_number`` (from 0): each variant goes first in turn."""
    turn = round_number % len(labels)
    return labels[turn:] + labels[:turn]


def summarise(slices: dict[str, list[Slice]], reference: str) -> dict[str, Summary]:
    """Per variant: medians, and the ratios to ``reference`` in the same rounds."""
    summaries = {}
    for label, runs in slices.items():
        ratios = [run.rps / base.rps - 1 for run, base in zip(runs, slices[reference], strict=True)]
        error = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
        summaries[label] = Summary(
            median_rps=statistics.median(run.rps for run in runs),
            median_cpu_us=statistics.median(run.cpu_us_per_request for run in runs),
            paired_median=statistics.median(ratios),
            paired_mean=statistics.mean(ratios),
            standard_error=error,
        )
    return summaries


def report(summaries: dict[str, Summary], heading: str) -> None:
    print(f"\n{heading}\n")
    print("| variant | requests/s | CPU µs/request | paired median | paired mean ± s.e. |")
    print("|---|---:|---:|---:|---:|")
    for label, summary in summaries.items():
        print(
            f"| {label} | {summary.median_rps:.0f} | {summary.median_cpu_us:.0f} "
            f"| {summary.paired_median * 100:+.1f} % "
            f"| {summary.paired_mean * 100:+.1f} ± {summary.standard_error * 100:.1f} % |"
        )


def measure_slice(pid: int, port: int, script: Path, duration: int) -> Slice:
    time.sleep(PAUSE_SECONDS)
    before = bench._cpu_seconds(pid)
    result = bench.run_wrk(port, script, duration, CONNECTIONS)
    used = bench._cpu_seconds(pid) - before
    if result.errors:
        raise SystemExit(f"{result.errors} failed requests on port {port}")
    return Slice(result.rps, used / (result.rps * duration) * 1e6)


def run(args: argparse.Namespace, labels: list[str]) -> dict[str, list[Slice]]:
    slices: dict[str, list[Slice]] = {label: [] for label in labels}
    with (
        tempfile.TemporaryDirectory(prefix="pcf-paired-") as tmp,
        bench.otlp_sink() as sink,
        contextlib.ExitStack() as servers,
    ):
        workdir = Path(tmp)
        database = servers.enter_context(bench.seeded_database(args.database, workdir))
        payload: dict[str, Any] = instructions.payloads(database)[args.query]
        running: dict[str, tuple[int, int, Path]] = {}
        for label in labels:
            variant = instructions.variant(label, sink)
            port = bench.free_port()
            env = {**bench.pcf_env(database, port, "INFO"), **variant.env}
            log = workdir / f"{label}.log"
            process = servers.enter_context(
                bench.server([str(bench.BIN / "pcf-api"), "serve"], env, log)
            )
            bench.wait_serving(process, port, log)
            script = bench.wrk_script(workdir, label, payload)
            running[label] = (process.pid, port, script)
        for _, port, script in running.values():
            bench.run_wrk(port, script, WARMUP_SECONDS, CONNECTIONS)
        for round_number in range(args.rounds):
            line = []
            for label in rotation(labels, round_number):
                measured = measure_slice(*running[label], args.duration)
                slices[label].append(measured)
                line.append(f"{label} {measured.rps:.0f}/s {measured.cpu_us_per_request:.0f} µs")
            print(f"round {round_number + 1}: " + ", ".join(line), file=sys.stderr, flush=True)
    return slices


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--query", choices=("notes", "note"), default="notes")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--duration", type=int, default=5, help="seconds per slice")
    parser.add_argument(
        "--variants",
        default="no-metrics,tracing-0.1",
        help="the first is the reference: pcf-api, no-metrics, tracing-<ratio>",
    )
    args = parser.parse_args()
    labels = args.variants.split(",")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        parser.error("--variants needs two or more different variants")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    for label in labels:
        try:
            baseline = instructions.variant(label, "").baseline
        except ValueError:
            parser.error(f"unknown variant {label!r}")
        if baseline:
            parser.error("the baseline is measured by bench/graphql.py, not here")
    slices = run(args, labels)
    report(
        summarise(slices, labels[0]),
        f"source {bench.source_state()}; {args.database}, {args.query} query; {args.rounds} "
        f"rounds of wrk -t2 -c{CONNECTIONS} -d{args.duration}s per variant, in rotation; "
        f"paired = per-round ratio to {labels[0]}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
