"""Requests/s of pcf-api configurations measured in alternation, for effects smaller than the
machine's drift (the cost of metrics and tracing): a ratio per round, against the first variant.

    .venv/bin/python bench/paired.py [--database sqlite] [--query notes] [--rounds 40]
        [--duration 5] [--variants no-metrics,tracing-0.1] [--restart-every 5] [--no-pin]

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

Two things a round cannot cancel, and how the script deals with them:

- Each server process has a speed of its own: two processes of one configuration, up side by
  side, differed by 3 to 5 % for a whole run (hash seeds, memory layout). So the servers are
  started afresh every ``--restart-every`` rounds, their start order rotating too, and a long run
  averages over many processes.
- wrk and the servers share the machine's cores, so a server's requests/s also depends on how
  the scheduler splits them. With ``--pin`` (the default; two or more CPUs), the servers run on
  the last CPU and wrk and the OTLP sink on the others: a server then has one core of its own,
  like a pod with a CPU limit of 1 (PostgreSQL's own processes are not pinned).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a file rather than with -m, a script has its own directory first on the path: the
# repository root goes there instead, so that bench is a package and bench/graphql.py does not
# shadow graphql-core.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import instructions
from bench.graphql import (
    BIN,
    cpu_seconds,
    free_port,
    otlp_sink,
    pcf_env,
    run_wrk,
    seeded_database,
    server,
    source_state,
    wait_serving,
    wrk_script,
)

WARMUP_SECONDS = 3
PAUSE_SECONDS = 2.0
CONNECTIONS = 50


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


def blocks(rounds: int, restart_every: int) -> list[range]:
    """The rounds each set of server processes serves, in order."""
    return [
        range(start, min(start + restart_every, rounds))
        for start in range(0, rounds, restart_every)
    ]


def split_cpus(cpus: set[int]) -> tuple[set[int], set[int]]:
    """(the servers' CPU, the load's CPUs): the highest-numbered CPU for the servers."""
    if len(cpus) < 2:
        raise ValueError("pinning needs two or more CPUs")
    servers = max(cpus)
    return {servers}, cpus - {servers}


@contextlib.contextmanager
def cpu_affinity(cpus: set[int] | None) -> Iterator[None]:
    """This thread on ``cpus`` inside the block (None: unchanged); processes started from it
    there inherit them."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


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
    before = cpu_seconds(pid)
    result = run_wrk(port, script, duration, CONNECTIONS)
    used = cpu_seconds(pid) - before
    if result.errors:
        raise SystemExit(f"{result.errors} failed requests on port {port}")
    return Slice(result.rps, used / (result.rps * duration) * 1e6)


@dataclass(frozen=True)
class Setup:
    """What every server of a run shares."""

    database: Any
    sink: str
    workdir: Path
    payload: dict[str, Any]


def start(label: str, setup: Setup, servers: contextlib.ExitStack) -> tuple[int, int, Path]:
    """A server of variant ``label``, serving until ``servers`` closes: (pid, port, wrk script)."""
    variant = instructions.variant(label, setup.sink)
    port = free_port()
    env = {**pcf_env(setup.database, port, "INFO"), **variant.env}
    name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}-{port}"  # a label may hold a path
    log = setup.workdir / f"{name}.log"
    process = servers.enter_context(server([str(BIN / "pcf-api"), "serve"], env, log))
    wait_serving(process, port, log)
    return process.pid, port, wrk_script(setup.workdir, name, setup.payload)


def measure_round(
    running: dict[str, tuple[int, int, Path]],
    labels: list[str],
    round_number: int,
    duration: int,
    slices: dict[str, list[Slice]],
) -> None:
    line = []
    for label in rotation(labels, round_number):
        measured = measure_slice(*running[label], duration)
        slices[label].append(measured)
        line.append(f"{label} {measured.rps:.0f}/s {measured.cpu_us_per_request:.0f} µs")
    print(f"round {round_number + 1}: " + ", ".join(line), file=sys.stderr, flush=True)


def run(args: argparse.Namespace, labels: list[str]) -> dict[str, list[Slice]]:
    slices: dict[str, list[Slice]] = {label: [] for label in labels}
    server_cpus, load_cpus = split_cpus(os.sched_getaffinity(0)) if args.pin else (None, None)
    with (
        cpu_affinity(load_cpus),  # the OTLP sink's thread and wrk inherit it
        tempfile.TemporaryDirectory(prefix="pcf-paired-") as tmp,
        otlp_sink() as sink,
        seeded_database(args.database, Path(tmp)) as database,
    ):
        setup = Setup(database, sink, Path(tmp), instructions.payloads(database)[args.query])
        for number, rounds in enumerate(blocks(args.rounds, args.restart_every)):
            with contextlib.ExitStack() as servers:
                running = {}
                for label in rotation(labels, number):
                    with cpu_affinity(server_cpus):
                        running[label] = start(label, setup, servers)
                for _, port, script in running.values():
                    run_wrk(port, script, WARMUP_SECONDS, CONNECTIONS)
                for round_number in rounds:
                    measure_round(running, labels, round_number, args.duration, slices)
    return slices


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--query", choices=("notes", "note"), default="notes")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--duration", type=int, default=5, help="seconds per slice")
    parser.add_argument(
        "--restart-every", type=int, default=5, help="rounds per set of server processes"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="servers on the last CPU, wrk and the OTLP sink on the others",
    )
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
    if args.restart_every < 1:
        parser.error("--restart-every must be at least 1")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs two or more CPUs (or --no-pin)")
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
        f"source {source_state()}; {args.database}, {args.query} query; {args.rounds} "
        f"rounds of wrk -t2 -c{CONNECTIONS} -d{args.duration}s per variant, in rotation, fresh "
        f"servers every {args.restart_every}; "
        f"{'servers pinned to one CPU' if args.pin else 'not pinned'}; "
        f"paired = per-round ratio to {labels[0]}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
