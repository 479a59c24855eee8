"""bench/garbage_collector.py: the probe it loads into the server, and how it reports a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import garbage_collector as collector

# Makes cycles until told to stop: the collector runs, and the probe times it.
CYCLES = """
import sys, time
class Node:
    def __init__(self):
        self.me = self
print("ready", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    for _ in range(10_000):
        Node()
    time.sleep(0.01)
"""


def test_the_probe_counts_and_times_collections_in_the_process_it_is_loaded_into(
    tmp_path: Path,
) -> None:
    (tmp_path / "sitecustomize.py").write_text(collector.PROBE)
    out = tmp_path / "totals.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BENCH_GC_PROBE_OUT": str(out)}
    process = subprocess.Popen(
        [sys.executable, "-c", CYCLES], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        first = collector.probe_totals(process.pid, out)
        time.sleep(0.5)
        second = collector.probe_totals(process.pid, out)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert first["collections"][0] > 0
    assert second["collections"][0] > first["collections"][0]
    assert sum(second["seconds"]) > sum(first["seconds"]) > 0
    assert 0 < second["longest"] < 1
    assert second["threshold"][0] == 700  # Python's default: nothing settled it
    assert json.loads(out.read_text()) == second


def test_the_report_gives_gc_time_per_request_and_share_of_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def run(rps: float, gc_seconds: float) -> collector.Run:
        return collector.Run(
            rps=rps,
            p99_ms=120.0,
            collections=[900, 80, 7],
            gc_seconds=gc_seconds,
            longest_ms=85.0,
            seconds=10,
            rss_mib=126.4,
        )

    args = type("Args", (), {"connections": 50, "duration": 10, "repeat": 1})()
    collector.report({"sqlite": {0: [run(1000.0, 1.0)], 10000: [run(1250.0, 0.25)]}}, args)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sqlite")]
    assert rows == [
        "| sqlite | 0 (Python's defaults) | 1,000 (1,000-1,000) | 120 ms | 900 / 80 / 7 "
        "| 100 µs | 10.0% | 85 ms | 126.4 MiB |",
        "| sqlite | 10000 | 1,250 (1,250-1,250) | 120 ms | 900 / 80 / 7 "
        "| 20 µs | 2.5% | 85 ms | 126.4 MiB |",
    ]
