"""Subscription fan-out: events/s delivered, p99 delivery latency and the database connections
used, at several subscriber counts, through one `pcf-api serve` on PostgreSQL (production
profile).

Per count: a fresh database, a fresh server, the subscribers (``--users`` users, four
subscriptions per socket), ``--creates`` notes created meanwhile, and ``pg_stat_activity``
sampled every 50 ms for the server's connections (``application_name`` ``pcf-api`` for the
request pool, ``pcf_api events …`` for the listener; the broker's publishing pool shows as an
unnamed asyncpg client). The harness is the acceptance test's (``tests/support/fanout.py``), so
every figure is a delivery read off a real socket.

    .venv/bin/python bench/fanout.py                       # 100, 300, 1000 subscribers
    .venv/bin/python bench/fanout.py --subscribers 1000 --users 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.databases import ADMIN_DSN, postgres_database
from support.fanout import FanOutResult, run_fan_out, server_environment
from support.servers import start_server


class ConnectionSampler(threading.Thread):
    """The most connections each client of ``database`` held at once while it ran."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.peak: Counter[str] = Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            while not self.stopped.wait(0.05):
                rows = admin.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = %s GROUP BY application_name",
                    (self.database,),
                ).fetchall()
                for name, count in rows:
                    label = name or "(unnamed: events publishing pool)"
                    self.peak[label] = max(self.peak[label], count)


def cpu_seconds(pid: int) -> float:
    """User and system CPU the process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(subscribers: int, users: int, creates: int) -> tuple[FanOutResult, Counter[str], float]:
    with postgres_database() as url, tempfile.TemporaryDirectory() as directory:
        server = start_server(Path(directory), server_environment(url))
        try:
            server.wait_until_ready(timeout=60)
            sampler = ConnectionSampler(url.rsplit("/", 1)[1])
            sampler.start()
            cpu_before = cpu_seconds(server.process.pid)
            result = asyncio.run(
                run_fan_out(
                    server.url,
                    users=users,
                    subscribers=subscribers,
                    creates=creates,
                    per_socket=4,
                    deliver_within=120,
                )
            )
            cpu = cpu_seconds(server.process.pid) - cpu_before
            sampler.stopped.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(30)
    return result, sampler.peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="100,300,1000")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--creates", type=int, default=200)
    options = parser.parse_args()
    print(
        "| subscribers | users | delivered | missing | events/s | delivery p99 | "
        "unrelated query p99 | server CPU | peak connections |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count in [int(item) for item in options.subscribers.split(",")]:
        users = min(options.users, count)
        result, peak, cpu = measure(count, users, options.creates)
        connections = ", ".join(f"{name}: {n}" for name, n in sorted(peak.items()))
        print(
            f"| {count} | {users} | {result.delivered} | {result.missing} | "
            f"{result.events_per_second:.0f} | {result.delivery_p99 * 1000:.0f} ms | "
            f"{result.probe_p99 * 1000:.0f} ms | {cpu:.1f} s | {connections} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
