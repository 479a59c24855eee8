"""bench/load/stepreport.py: the step plan and the per-step aggregation of the load test."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from bench.load import stepreport as sr


def test_plan_rounds_users_up_and_keeps_the_order() -> None:
    steps = sr.plan([50, 5, 101], user_rate=2, step_seconds=20, settle_seconds=5)
    assert [step.users for step in steps] == [25, 3, 51]
    assert [step.offered_rps for step in steps] == [50, 6, 102]
    assert [step.index for step in steps] == [0, 1, 2]
    assert all(step.seconds == 20 and step.settle == 5 for step in steps)


@pytest.mark.parametrize(
    ("rates", "user_rate", "seconds", "settle"),
    [([], 2, 20, 5), ([10, 0], 2, 20, 5), ([10], 0, 20, 5), ([10], 2, 20, 20), ([10], 2, 20, -1)],
)
def test_plan_refuses_nonsense(
    rates: list[float], user_rate: float, seconds: float, settle: float
) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        sr.plan(rates, user_rate, seconds, settle)


def test_parse_rates() -> None:
    assert sr.parse_rates("50, 100,200") == [50.0, 100.0, 200.0]
    with pytest.raises(ValueError, match="positive"):
        sr.parse_rates("50,-1")
    with pytest.raises(ValueError, match="positive"):
        sr.parse_rates("")


def test_step_at_follows_the_schedule_and_ends() -> None:
    steps = sr.plan([10, 20, 30], user_rate=1, step_seconds=10, settle_seconds=2)

    def users_at(t: float) -> int | None:
        step = sr.step_at(steps, t)
        return None if step is None else step.users

    assert users_at(0) == 10
    assert users_at(9.99) == 10
    assert users_at(10) == 20
    assert users_at(29.9) == 30
    assert sr.step_at(steps, 30) is None


def test_windows_leave_the_settling_time_out() -> None:
    steps = sr.plan([10, 20], user_rate=1, step_seconds=10, settle_seconds=3)
    first, second = sr.windows(steps, t0=1000.0)
    assert (first.start, first.end, first.users, first.offered_rps) == (1003.0, 1010.0, 10, 10)
    assert (second.start, second.end) == (1013.0, 1020.0)
    assert second.seconds == 7


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert sr.percentile(values, 0.50) == 50
    assert sr.percentile(values, 0.99) == 99
    assert sr.percentile(values, 1.0) == 100
    assert sr.percentile([7.0], 0.99) == 7
    assert sr.percentile([1.0, 2.0, 3.0], 0.0) == 1  # never below the first
    assert math.isnan(sr.percentile([], 0.5))


def readings() -> list[sr.CpuReading]:
    # Server: 0.5 cores, database 0.2, client 0.1, the machine 1.0 -> other 0.2 (t = 0..20 s).
    return [
        sr.CpuReading(t=float(t), server=0.5 * t, database=0.2 * t, client=0.1 * t, busy=1.0 * t)
        for t in range(21)
    ]


def test_cpu_between_uses_the_readings_inside_the_window() -> None:
    use = sr.cpu_between(readings(), 2.5, 10.5)
    assert use.server == pytest.approx(0.5)
    assert use.database == pytest.approx(0.2)
    assert use.client == pytest.approx(0.1)
    assert use.machine == pytest.approx(1.0)
    assert use.other == pytest.approx(0.2)
    assert sr.cpu_between(readings(), 2.5, 3.5).server is None  # one reading only
    partial = [
        sr.CpuReading(t=float(t), server=None, database=None, client=None, busy=t) for t in (0, 1)
    ]
    assert sr.cpu_between(partial, 0, 1).server is None
    assert sr.cpu_between(partial, 0, 1).other == pytest.approx(1.0)


def test_aggregate_buckets_by_send_time_and_summarises_each_step() -> None:
    steps = sr.plan([10, 20], user_rate=1, step_seconds=10, settle_seconds=2)
    wins = sr.windows(steps, t0=0.0)  # measured: [2, 10) and [12, 20)
    samples = [sr.Sample(start=1.0, ms=9999, ok=False, name="notes", error="settling")]
    # Step 1: 80 requests, latencies 1..80 ms, one failed search.
    samples += [
        sr.Sample(start=2 + i * 0.1, ms=float(i + 1), ok=True, name="notes") for i in range(79)
    ]
    samples.append(sr.Sample(start=9.95, ms=500.0, ok=False, name="search", error="HTTP 429"))
    # Step 2: 140 requests, all fine, 100 ms each; one sent at 20.0 belongs to no window.
    samples += [sr.Sample(start=12 + i * 0.05, ms=100.0, ok=True, name="note") for i in range(140)]
    samples.append(sr.Sample(start=20.0, ms=1.0, ok=True, name="note"))
    first, second = sr.aggregate(samples, wins, readings())

    assert first.requests == 80
    assert first.errors == 1
    assert first.error_rate == pytest.approx(1 / 80)
    assert first.rps == pytest.approx(80 / 8)
    assert first.p50_ms == 40
    assert first.p90_ms == 72
    assert first.p99_ms == 500  # rank ceil(0.99 x 80) = 80: the slow failure
    assert first.max_ms == 500
    assert first.error_kinds == {"HTTP 429": 1}
    assert first.operations["notes"].requests == 79
    assert first.operations["search"].errors == 1
    assert first.cpu.server == pytest.approx(0.5)
    assert (first.step, first.users, first.offered_rps) == (0, 10, 10)

    assert second.requests == 140
    assert second.errors == 0
    assert second.error_rate == 0
    assert second.rps == pytest.approx(140 / 8)
    assert second.p50_ms == second.p99_ms == 100
    assert set(second.operations) == {"note"}


def test_an_empty_step_reports_nothing_rather_than_zero() -> None:
    (result,) = sr.aggregate([], sr.windows(sr.plan([5], 1, 10, 2), t0=0.0))
    assert result.requests == 0
    assert math.isnan(result.error_rate)
    assert math.isnan(result.p99_ms)
    assert "n/a" in sr.markdown_table([result])


def test_report_outputs(tmp_path: Path) -> None:
    steps = sr.plan([10], user_rate=1, step_seconds=10, settle_seconds=0)
    samples = [sr.Sample(start=float(i), ms=20.0, ok=True, name="notes") for i in range(10)]
    (result,) = sr.aggregate(samples, sr.windows(steps, 0.0), readings())
    assert sr.StepResult.from_dict(result.as_dict()) == result

    table = sr.markdown_table([result], cpu_request_cores=0.5)
    header, rule, row = table.strip().splitlines()
    assert "CPU % of request" in header
    assert header.count("|") == rule.count("|") == row.count("|")
    assert row.startswith("| 1 | 10 | 10 | 1.0 | 20.0 ms | 20.0 ms | 0.00% (0) | 0.50 | 100% |")

    sr.write_csv(tmp_path / "steps.csv", [result])
    with (tmp_path / "steps.csv").open() as handle:
        (line,) = list(csv.DictReader(handle))
    assert line["rps"] == "1.00"
    assert line["p99_ms"] == "20.0"
    assert line["server_cores"] == "0.500"
