"""Resident memory of one `pcf-api serve` over a long run: idle, then after every slice of a
soak of at least ``--requests`` requests (the notes query and ``note(id)`` in turn, wrk), on the
seeded PostgreSQL database of bench/graphql.py.

    .venv/bin/python bench/soak.py                       # 200 000 requests, 10 s slices
    .venv/bin/python bench/soak.py --requests 50000 --slice 5

RSS is read from /proc/<pid>/status after each slice; the table shows how it grows and whether
it levels off. Figures: docs/benchmarks.md ("Memory budgets").
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.graphql import (
    BIN,
    NOTE_QUERY,
    NOTES_QUERY,
    free_port,
    pcf_env,
    run_wrk,
    seeded_database,
    server,
    wait_serving,
    wrk_script,
)


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no VmRSS for {pid}")
    return int(match[1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--slice", type=int, default=10, help="seconds of wrk per slice")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, seeded_database("postgres", Path(tmp)) as database:
        workdir = Path(tmp)
        port = free_port()
        log = workdir / "server.log"
        scripts = [
            wrk_script(workdir, "notes", {"query": NOTES_QUERY}),
            wrk_script(
                workdir, "note", {"query": NOTE_QUERY, "variables": {"id": database.note_id}}
            ),
        ]
        env = pcf_env(database, port, "WARNING")
        with server([str(BIN / "pcf-api"), "serve"], env, log) as process:
            wait_serving(process, port, log)
            idle = rss_mib(process.pid)
            print("| requests so far | RSS |")
            print("|---:|---:|")
            print(f"| 0 (idle) | {idle:.0f} MiB |", flush=True)
            done = 0
            slices = 0
            while done < args.requests:
                outcome = run_wrk(port, scripts[slices % 2], args.slice, args.connections)
                if outcome.errors:
                    raise SystemExit(f"{outcome.errors} errors in slice {slices + 1}")
                done += round(outcome.rps * args.slice)
                slices += 1
                print(f"| {done} | {rss_mib(process.pid):.0f} MiB |", flush=True)
            final = rss_mib(process.pid)
    print(f"idle {idle:.0f} MiB, after {done} requests {final:.0f} MiB ({final / idle - 1:+.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
