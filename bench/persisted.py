"""Requests/s of a persisted query sent by GET with only its hash, against the same query POSTed
with its document: what automatic persisted queries cost or save on the server.

    .venv/bin/python bench/persisted.py [--duration 10] [--connections 32] [--rounds 3]

One pcf-api (bench/graphql.py's settings and seeded SQLite database), the notes query registered
once (hash + document), then ``wrk -t2`` closed-loop runs alternating between the two requests,
``--rounds`` times each after a warm-up; the median of each is reported. Needs wrk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.graphql import (
    BIN,
    NOTES_QUERY,
    WRK_CHECK,
    free_port,
    pcf_env,
    run_wrk,
    seeded_database,
    server,
    source_state,
    wait_serving,
    wrk_script,
)

EXTENSIONS = {
    "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(NOTES_QUERY.encode()).hexdigest()}
}


def get_script(directory: Path) -> Path:
    path = directory / "persisted-get.lua"
    query = "extensions=" + quote(json.dumps(EXTENSIONS, separators=(",", ":")))
    path.write_text(f'wrk.method = "GET"\nwrk.path = "/graphql?{query}"\n' + WRK_CHECK)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcf-bench-persisted-") as tmp:
        workdir = Path(tmp)
        with seeded_database("sqlite", workdir) as database:
            port = free_port()
            log = workdir / "server.log"
            env = pcf_env(database, port, "WARNING")
            with server([str(BIN / "pcf-api"), "serve"], env, log) as process:
                wait_serving(process, port, log)
                registered = httpx.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": NOTES_QUERY, "extensions": EXTENSIONS},
                )
                if "errors" in registered.json():
                    raise SystemExit(f"registration failed: {registered.text}")
                scripts = {
                    "POST document": wrk_script(workdir, "post", {"query": NOTES_QUERY}),
                    "GET hash only": get_script(workdir),
                }
                for script in scripts.values():  # warm-up
                    run_wrk(port, script, 2, args.connections)
                figures: dict[str, list[float]] = {name: [] for name in scripts}
                for _ in range(args.rounds):
                    for name, script in scripts.items():
                        result = run_wrk(port, script, args.duration, args.connections)
                        if result.errors:
                            raise SystemExit(f"{name}: {result.errors} errors")
                        figures[name].append(result.rps)
    print(f"\nsource {source_state()}; sqlite; wrk -t2 -c{args.connections} -d{args.duration}s")
    print("| request | requests/s (median) | runs |")
    print("|---|---:|---|")
    for name, values in figures.items():
        runs = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {name} | {statistics.median(values):.0f} | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
