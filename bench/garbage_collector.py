"""What Python's cyclic garbage collector costs pcf-api under load, with the collector as Python
sets it and as pcf-api settles it once started (``server.gc_young_threshold``).

    .venv/bin/python bench/garbage_collector.py [--databases sqlite,postgres] [--repeat 3]
        [--duration 10] [--connections 50] [--thresholds 0,10000]

For each database (seeded like ``bench/graphql.py``: 1 000 notes) and each threshold, in turns,
``pcf-api serve`` starts with ``PCF_SERVER__GC_YOUNG_THRESHOLD`` set (0: Python's defaults, no
freeze) and a probe loaded through ``sitecustomize`` that times every collection with
``gc.callbacks`` and writes its running totals (and the longest pause since the previous report)
to a file on SIGUSR1. After a warm-up, the script
takes the totals, runs ``wrk -t2 -cN -dDs`` on the notes query, takes the totals again and reports
the difference: collections per generation, time spent collecting per request and as a share of
the run, the longest pause, requests/s and p99, and the server's resident memory afterwards.

Needs wrk (apt-get install wrk); PostgreSQL as for ``bench/graphql.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a file rather than with -m, a script has its own directory first on the path: the
# repository root goes there instead, so that bench is a package and bench/graphql.py does not
# shadow graphql-core.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

# bench/graphql.py's databases, seeding, servers and wrk driver
from bench.graphql import (
    BIN,
    NOTES_QUERY,
    free_port,
    pcf_env,
    run_wrk,
    seeded_database,
    server,
    source_state,
    wait_serving,
    wrk_script,
)

WARMUP_SECONDS = 3
START_TIMEOUT = 60.0

PROBE = """
import gc, json, os, signal, time

_totals = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "longest": 0.0}
_started = [0.0]


def _timed(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    elapsed = time.perf_counter() - _started[0]
    generation = info["generation"]
    _totals["collections"][generation] += 1
    _totals["seconds"][generation] += elapsed
    _totals["longest"] = max(_totals["longest"], elapsed)


def _write(signum, frame):
    path = os.environ["BENCH_GC_PROBE_OUT"]
    with open(path + ".tmp", "w") as out:
        json.dump({**_totals, "threshold": gc.get_threshold(),
                   "frozen": gc.get_freeze_count()}, out)
    os.replace(path + ".tmp", path)
    _totals["longest"] = 0.0  # the longest pause since the previous report


gc.callbacks.append(_timed)
signal.signal(signal.SIGUSR1, _write)
"""


@dataclass(frozen=True)
class Run:
    rps: float
    p99_ms: float
    collections: list[int]
    gc_seconds: float
    longest_ms: float
    seconds: float
    rss_mib: float

    @property
    def gc_us_per_request(self) -> float:
        return self.gc_seconds / (self.rps * self.seconds) * 1e6


def probe_totals(pid: int, out: Path) -> dict[str, Any]:
    """Ask the probe in the server for its running totals."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            totals: dict[str, Any] = json.loads(out.read_text())
            return totals
        time.sleep(0.05)
    raise SystemExit("the server's garbage-collector probe did not answer")


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def measure(database: Any, threshold: int, workdir: Path, args: argparse.Namespace) -> Run:
    port = free_port()
    out = workdir / f"probe-{port}.json"
    env = {
        **pcf_env(database, port, "INFO"),
        "PCF_SERVER__GC_YOUNG_THRESHOLD": str(threshold),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")])),
        "BENCH_GC_PROBE_OUT": str(out),
    }
    script = wrk_script(workdir, "notes", {"query": NOTES_QUERY})
    log = workdir / f"server-{port}.log"
    with server([str(BIN / "pcf-api"), "serve"], env, log) as process:
        wait_serving(process, port, log, timeout=START_TIMEOUT)
        run_wrk(port, script, WARMUP_SECONDS, args.connections)
        before = probe_totals(process.pid, out)
        result = run_wrk(port, script, args.duration, args.connections)
        after = probe_totals(process.pid, out)
        rss = resident_mib(process.pid)
    pairs = zip(before["collections"], after["collections"], strict=True)
    return Run(
        rps=result.rps,
        p99_ms=result.p99_ms,
        collections=[later - earlier for earlier, later in pairs],
        gc_seconds=sum(after["seconds"]) - sum(before["seconds"]),
        longest_ms=after["longest"] * 1000,
        seconds=args.duration,
        rss_mib=rss,
    )


def report(results: dict[str, dict[int, list[Run]]], args: argparse.Namespace) -> None:
    print(
        f"\nsource {source_state()}; wrk -t2 -c{args.connections} -d{args.duration}s on "
        f"the notes query, one pcf-api process; median of {args.repeat} rounds (range)\n"
    )
    print(
        "| database | gc_young_threshold | requests/s | p99 | collections gen0 / gen1 / gen2 "
        "| GC time per request | GC share | longest pause | RSS after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for database, by_threshold in results.items():
        for threshold, runs in by_threshold.items():
            rps = [run.rps for run in runs]
            gc_share = statistics.median(run.gc_seconds / run.seconds for run in runs)
            collections = [
                int(statistics.median(run.collections[generation] for run in runs))
                for generation in range(3)
            ]
            label = f"{threshold} (Python's defaults)" if threshold == 0 else str(threshold)
            print(
                f"| {database} | {label} | {statistics.median(rps):,.0f} "
                f"({min(rps):,.0f}-{max(rps):,.0f}) "
                f"| {statistics.median(run.p99_ms for run in runs):.0f} ms "
                f"| {' / '.join(map(str, collections))} "
                f"| {statistics.median(run.gc_us_per_request for run in runs):.0f} µs "
                f"| {gc_share:.1%} "
                f"| {max(run.longest_ms for run in runs):.0f} ms "
                f"| {statistics.median(run.rss_mib for run in runs):.1f} MiB |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (each threshold once)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument(
        "--thresholds", default="0,10000", help="server.gc_young_threshold values (0: off)"
    )
    args = parser.parse_args()
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if not set(databases) <= {"sqlite", "postgres"}:
        parser.error("--databases takes sqlite and/or postgres")
    thresholds = [int(value) for value in args.thresholds.split(",") if value.strip()]
    if args.repeat < 1 or not thresholds:
        parser.error("--repeat must be at least 1 and --thresholds must name one value")

    def stop(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    results: dict[str, dict[int, list[Run]]] = {}
    with tempfile.TemporaryDirectory(prefix="pcf-bench-gc-") as tmp:
        workdir = Path(tmp)
        (workdir / "sitecustomize.py").write_text(PROBE)
        for name in databases:
            with seeded_database(name, workdir) as database:
                results[name] = {threshold: [] for threshold in thresholds}
                for round_number in range(args.repeat):
                    # Each round starts with the next threshold, so none always runs first.
                    shift = round_number % len(thresholds)
                    for threshold in thresholds[shift:] + thresholds[:shift]:
                        print(
                            f"{name}: round {round_number + 1}, threshold {threshold} ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        run = measure(database, threshold, workdir, args)
                        results[name][threshold].append(run)
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
