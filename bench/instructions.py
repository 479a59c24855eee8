"""CPU instructions per GraphQL request, counted by valgrind's callgrind: a figure that stays the
same from run to run, where requests/s on a shared machine swing by ±10 %.

    .venv/bin/python bench/instructions.py [--databases sqlite,postgres] [--requests 300]
        [--variants baseline,pcf-api,no-metrics,tracing-0.1,tracing-1.0]

Each server (the same ones ``bench/graphql.py`` runs, with the same settings and the same seeded
data) starts under ``valgrind --tool=callgrind --instr-atstart=no``, so start-up runs
uninstrumented. After a warm-up the script switches instrumentation on, sends a few more requests
(valgrind retranslates the code), zeroes the counters, sends ``--requests`` requests one after the
other on one keep-alive connection, waits (with tracing on) until the span exporter has sent
their spans (``SPAN_EXPORT_INTERVAL``), and dumps the counters. Instructions per request = the
dump's total, less what the idle server does while the script waits, / requests. (The warm-up's
spans are sent before counting starts.) Every thread of the server counts (SQLite's connection
threads, the span exporter); other processes do not (PostgreSQL, the client).

Instructions are not time: a cache miss, a system call, a thread hand-over cost time and few
instructions. They are the part of a request's cost that is the server's own code, free of the
machine's noise: two runs of one configuration agree within 0.1 %. So this script answers "how
much more work does X do per request than Y"; ``bench/graphql.py`` answers "how many requests a
second", and both go in docs/benchmarks.md.

Needs valgrind (``apt-get install valgrind``); PostgreSQL as for ``bench/graphql.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Run as a file rather than with -m, a script has its own directory first on the path: the
# repository root goes there instead, so that bench is a package and bench/graphql.py does not
# shadow graphql-core.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

# bench/graphql.py's databases, seeding and server settings, so both scripts measure the same thing
from bench.graphql import (
    BIN,
    NOTE_QUERY,
    NOTES_QUERY,
    baseline_command,
    clean_env,
    free_port,
    otlp_sink,
    pcf_env,
    seeded_database,
    server,
    source_state,
    wait_serving,
)

WARMUP_REQUESTS = 200
INSTRUMENTED_WARMUP_REQUESTS = 30
# Spans are exported every tracing.export_interval_seconds (5 s by default). Under valgrind a
# request takes ≈ 50 times as long, so at 5 s each export would carry a fiftieth of the spans it
# carries in service, and its fixed cost (an HTTP request) would count ≈ 50 times over. At the
# longest interval the settings allow, the measured requests' spans go out in one or two exports.
SPAN_EXPORT_INTERVAL = 60
IDLE_SECONDS = 10.0
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class Variant:
    label: str
    env: dict[str, str]
    baseline: bool = False
    headers: dict[str, str] = field(default_factory=dict)


BROWSER_ORIGIN = "http://127.0.0.1:3000"


def _browser() -> Variant:
    """What a web app's requests meet: CORS on, each request from an allowed origin, and only
    trusted documents."""
    env = {**trusted_documents_env(), "PCF_CORS__ALLOW_ORIGINS": BROWSER_ORIGIN}
    return Variant("browser", env, headers={"Origin": BROWSER_ORIGIN})


_NAMED: dict[str, Callable[[], Variant]] = {
    "baseline": lambda: Variant("baseline", {}, baseline=True),
    "pcf-api": lambda: Variant("pcf-api", {}),
    "no-metrics": lambda: Variant("no-metrics", {"PCF_METRICS__ENABLED": "false"}),
    "trusted": lambda: Variant("trusted", trusted_documents_env()),
    "browser": _browser,
}


def variant(label: str, otlp_endpoint: str) -> Variant:
    """``baseline``, ``pcf-api`` (as it runs by default: metrics on, tracing off),
    ``no-metrics`` (metrics and tracing off), ``trusted`` (only the documents of a generated
    trusted-documents manifest), ``browser`` (``trusted`` plus CORS, requests from an allowed
    origin) or ``tracing-<ratio>`` (metrics on, tracing at that
    sample ratio, exporting to a local OTLP sink). ``NAME@CHECKOUT`` is variant NAME running the
    source of another checkout (e.g. a ``git worktree`` of an older commit), to compare two
    versions of the code in the same run."""
    name, at, checkout = label.partition("@")
    if at:
        if not checkout or name == "baseline":
            raise ValueError(label)
        other = variant(name, otlp_endpoint)
        source = str(Path(checkout).resolve() / "src")
        return Variant(label, {**other.env, "PYTHONPATH": source})
    named = _NAMED.get(label)
    if named is not None:
        return named()
    ratio = label.removeprefix("tracing-")
    try:
        valid = label.startswith("tracing-") and 0 <= float(ratio) <= 1
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(label)
    env = {
        "PCF_TRACING__ENABLED": "true",
        "PCF_TRACING__ENDPOINT": otlp_endpoint,
        "PCF_TRACING__SAMPLE_RATIO": ratio,
    }
    return Variant(label, env)


def trusted_documents_env() -> dict[str, str]:
    """Only trusted documents, from a generated manifest of the two measured queries (the
    document policy's most expensive configuration on the plain-text path)."""
    directory = Path(tempfile.mkdtemp(prefix="pcf-bench-trusted-"))
    manifest = directory / "persisted-documents.json"
    documents = {hashlib.sha256(q.encode()).hexdigest(): q for q in (NOTES_QUERY, NOTE_QUERY)}
    manifest.write_text(json.dumps(documents))
    return {
        "PCF_GRAPHQL__TRUSTED_DOCUMENTS": str(manifest),
        "PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS": "true",
    }


def payloads(database: Any) -> dict[str, dict[str, Any]]:
    return {
        "notes": {"query": NOTES_QUERY},
        "note": {"query": NOTE_QUERY, "variables": {"id": database.note_id}},
    }


class Callgrind:
    """Drives one server under callgrind through ``callgrind_control``."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir

    def _control(self, *arguments: str) -> None:
        subprocess.run(
            ["callgrind_control", *arguments, str(self.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def instrument(self) -> None:
        self._control("--instr=on")

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> int:
        """Dump the counters; the instructions counted since the last zero."""
        before = set(self.out_dir.glob("callgrind.*"))
        self._control("--dump")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = set(self.out_dir.glob("callgrind.*")) - before
            for path in new:
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith("summary:"):
                        return int(line.split()[1])
            time.sleep(0.2)
        raise SystemExit(f"callgrind wrote no dump for pid {self.pid}")


def valgrind_command(command: list[str], out_dir: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.%p",
        *command,
    ]


def send(client: httpx.Client, payload: dict[str, Any], count: int) -> None:
    for _ in range(count):
        response = client.post("/graphql", json=payload)
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise SystemExit(f"request failed: {response.status_code} {body}")


def measure(variant: Variant, database: Any, workdir: Path, requests: int) -> dict[str, float]:
    """Instructions per request of each query, on one server started for this variant."""
    port = free_port()
    name = f"{database.name}-{re.sub(r'[^A-Za-z0-9_.-]', '_', variant.label)}"  # may hold a path
    out_dir = workdir / f"callgrind-{name}"
    out_dir.mkdir()
    if variant.baseline:
        command = baseline_command(port)
        env = {**clean_env(), "BENCH_DATABASE_URL": database.url}
    else:
        command = [str(BIN / "pcf-api"), "serve"]
        env = {
            **pcf_env(database, port, "INFO"),
            "PCF_TRACING__EXPORT_INTERVAL_SECONDS": str(SPAN_EXPORT_INTERVAL),
            **variant.env,
        }
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts, hence the same work, in every run
    settle = SPAN_EXPORT_INTERVAL + 2 if "PCF_TRACING__ENABLED" in variant.env else 0
    log = workdir / f"{name}.log"
    results: dict[str, float] = {}
    with server(valgrind_command(command, out_dir), env, log) as process:
        wait_serving(process, port, log, timeout=START_TIMEOUT)
        callgrind = Callgrind(process.pid, out_dir)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers=variant.headers
        ) as client:
            for payload in payloads(database).values():
                send(client, payload, WARMUP_REQUESTS)
            callgrind.instrument()
            for payload in payloads(database).values():
                send(client, payload, INSTRUMENTED_WARMUP_REQUESTS)
            time.sleep(settle)  # the warm-up's spans go out before counting starts
            windows: dict[str, int] = {}
            for name, payload in payloads(database).items():
                callgrind.zero()
                send(client, payload, requests)
                time.sleep(settle)  # until the exporter has sent these requests' spans
                windows[name] = callgrind.dump()
            # What the server does when no request comes (health checks, timers), per second:
            # taken out of the time spent waiting for the exporter above.
            callgrind.zero()
            time.sleep(IDLE_SECONDS)
            idle_per_second = callgrind.dump() / IDLE_SECONDS
        for name, instructions in windows.items():
            results[name] = (instructions - idle_per_second * settle) / requests
    return results


def report(results: dict[str, dict[str, dict[str, float]]], requests: int) -> None:
    print(f"\nsource {source_state()}; {requests} requests per figure; instructions per")
    print("request (millions); vs pcf-api = change against pcf-api as it runs by default")
    print("(metrics on, tracing off); baseline / pcf-api = how many times more work the")
    print("baseline does per request.\n")
    print("| database | query | variant | instructions/request | vs pcf-api | baseline / variant |")
    print("|---|---|---|---:|---:|---:|")
    for database, by_variant in results.items():
        queries = next(iter(by_variant.values())).keys()
        for query in queries:
            reference = by_variant.get("pcf-api", {}).get(query)
            baseline = by_variant.get("baseline", {}).get(query)
            for label, figures in by_variant.items():
                value = figures[query]
                change = f"{(value / reference - 1) * 100:+.1f} %" if reference else ""
                ratio = f"{baseline / value:.2f}x" if baseline and label != "baseline" else ""
                print(
                    f"| {database} | {query} | {label} | {value / 1e6:.3f} | {change} | {ratio} |"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--requests", type=int, default=300, help="requests counted per query")
    parser.add_argument(
        "--variants",
        default="baseline,pcf-api,no-metrics,tracing-0.1,tracing-1.0",
        help="comma-separated: baseline, pcf-api, no-metrics, trusted, browser, tracing-<ratio>",
    )
    args = parser.parse_args()
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if not set(databases) <= {"sqlite", "postgres"}:
        parser.error("--databases takes sqlite and/or postgres")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install valgrind)")

    def stop(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pcf-bench-instructions-") as tmp:
        workdir = Path(tmp)
        with otlp_sink() as otlp_endpoint:
            try:
                chosen = [
                    variant(label.strip(), otlp_endpoint)
                    for label in args.variants.split(",")
                    if label.strip()
                ]
            except ValueError as exc:
                parser.error(f"unknown variant: {exc}")
            for name in databases:
                with seeded_database(name, workdir) as database:
                    results[name] = {}
                    for chosen_variant in chosen:
                        print(f"{name}: {chosen_variant.label} ...", file=sys.stderr, flush=True)
                        results[name][chosen_variant.label] = measure(
                            chosen_variant, database, workdir, args.requests
                        )
    report(results, args.requests)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
