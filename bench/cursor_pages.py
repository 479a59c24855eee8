"""Requests/s of a keyset page deep in a 100 000-note list against the first page, on PostgreSQL.

    .venv/bin/python bench/cursor_pages.py [--notes 100000] [--rounds 3] [--duration 5]

Creates ``pcf_bench_<pid>`` (dropped afterwards), migrates it with ``pcf-api migrate``, seeds
``--notes`` notes with one ``INSERT ... SELECT generate_series`` (every one readable by the
benchmark's user through the local backend), starts one ``pcf-api serve`` and gives each query
in turn a ``wrk -t2 -c20`` slice per round, the order alternating. Queries, as a Relay client
sends them (no totalCount): ``notes(first: 10)``; ``notes(first: 10, after: <cursor of the
90 000th newest note>)``; and for comparison the deepest page offset style allows,
``notes(limit: 10, offset: 9990)``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.graphql import (
    BENCH_USER,
    BIN,
    clean_env,
    free_port,
    graphql_post,
    pcf_env,
    postgres_database,
    run_wrk,
    server,
    wait_serving,
    wrk_script,
)

FIELDS = "edges { cursor node { id title author } } pageInfo { hasNextPage endCursor }"
SEED = """
INSERT INTO notes (id, title, content, author, created_at, updated_at)
SELECT 'notes:' || lpad(i::text, 10, '0'), 'Note number ' || i,
       'Body of note ' || i || '. ' || repeat('Lorem ipsum dolor sit amet. ', 6),
       'author-' || (i %% 20),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, %(notes)s) AS i
"""
SEED_RELATIONSHIPS = """
INSERT INTO note_relationships (note_id, subject, relation)
SELECT id, author, 'owner' FROM notes UNION ALL SELECT id, %(reader)s, 'reader' FROM notes
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    deep_position = int(args.notes * 0.9)

    with postgres_database() as database, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = {**clean_env(), "PCF_LOG__LEVEL": "WARNING", "PCF_DATABASE__URL": database.url}
        subprocess.run([str(BIN / "pcf-api"), "migrate"], env=env, check=True, timeout=60)
        dsn = database.sync_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(SEED, {"notes": args.notes})
            connection.execute(SEED_RELATIONSHIPS, {"reader": BENCH_USER})
            connection.execute("VACUUM ANALYZE")

        port = free_port()
        log = workdir / "server.log"
        with server([str(BIN / "pcf-api"), "serve"], pcf_env(database, port, "WARNING"), log) as p:
            wait_serving(p, port, log)
            # The cursor a client paging forward would hold after 90 % of the list.
            cursor = None
            query = f"query($c: String) {{ notes(first: 100, after: $c) {{ {FIELDS} }} }}"
            for _ in range(deep_position // 100):
                _, body = graphql_post(port, query, {"c": cursor})
                cursor = body["data"]["notes"]["pageInfo"]["endCursor"]
            queries: dict[str, dict[str, Any]] = {
                "first page": {"query": f"{{ notes(first: 10) {{ {FIELDS} }} }}"},
                f"after {deep_position}": {
                    "query": f"query($c: String) {{ notes(first: 10, after: $c) {{ {FIELDS} }} }}",
                    "variables": {"c": cursor},
                },
                "offset 9990": {"query": f"{{ notes(limit: 10, offset: 9990) {{ {FIELDS} }} }}"},
            }
            for name, payload in queries.items():
                status, body = graphql_post(port, payload["query"], payload.get("variables"))
                edges = body["data"]["notes"]["edges"] if status == 200 else []
                if status != 200 or body.get("errors") or len(edges) != 10:
                    raise SystemExit(f"{name}: {status} {body}")
            scripts = {
                name: wrk_script(workdir, f"q{index}", payload)
                for index, (name, payload) in enumerate(queries.items())
            }
            results: dict[str, list[float]] = {name: [] for name in queries}
            for _name, script in scripts.items():  # warm-up
                run_wrk(port, script, 2, args.connections)
            for round_number in range(args.rounds):
                order = list(scripts.items())
                if round_number % 2:
                    order.reverse()
                for name, script in order:
                    outcome = run_wrk(port, script, args.duration, args.connections)
                    if outcome.errors:
                        raise SystemExit(f"{name}: {outcome.errors} errors")
                    results[name].append(outcome.rps)
                    print(
                        f"round {round_number + 1} {name}: {outcome.rps:.0f} req/s", file=sys.stderr
                    )
    reference = statistics.median(results["first page"])
    print(
        f"{args.notes} notes on PostgreSQL, "
        f"wrk -t2 -c{args.connections} -d{args.duration}s x {args.rounds}"
    )
    print("| query | requests/s (median) | range | vs first page |")
    print("|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.0f} | {min(values):.0f} to {max(values):.0f} "
            f"| {median / reference:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
