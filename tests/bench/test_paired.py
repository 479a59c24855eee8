"""bench/paired.py: the order of each round, the server processes and CPUs of a run, and the
paired ratios it reports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import paired


def test_each_variant_goes_first_in_turn() -> None:
    labels = ["no-metrics", "pcf-api", "tracing-0.1"]
    orders = [paired.rotation(labels, round_number) for round_number in range(4)]
    assert orders == [
        ["no-metrics", "pcf-api", "tracing-0.1"],
        ["pcf-api", "tracing-0.1", "no-metrics"],
        ["tracing-0.1", "no-metrics", "pcf-api"],
        ["no-metrics", "pcf-api", "tracing-0.1"],
    ]


def test_each_ratio_compares_slices_of_the_same_round() -> None:
    # The machine slows down between rounds; the variant costs 10 %, 5 %, then nothing. Medians
    # of requests/s taken apart (800 and 800) would see no cost at all.
    slices = {
        "no-metrics": [
            paired.Slice(1000.0, 1000.0),
            paired.Slice(500.0, 2000.0),
            paired.Slice(800.0, 1250.0),
        ],
        "tracing-0.1": [
            paired.Slice(900.0, 1100.0),
            paired.Slice(475.0, 2100.0),
            paired.Slice(800.0, 1250.0),
        ],
    }
    summaries = paired.summarise(slices, "no-metrics")
    traced = summaries["tracing-0.1"]
    assert traced.paired_median == pytest.approx(-0.05)
    assert traced.paired_mean == pytest.approx(-0.05)
    assert traced.standard_error == pytest.approx(0.05 / 3**0.5)
    assert traced.median_rps == pytest.approx(800.0)
    assert traced.median_cpu_us == pytest.approx(1250.0)
    assert summaries["no-metrics"].paired_mean == pytest.approx(0.0)


def test_the_standard_error_shrinks_with_the_number_of_rounds() -> None:
    def error(rounds: int) -> float:
        reference = [paired.Slice(100.0, 1.0)] * rounds
        variant = [paired.Slice(90.0 if i % 2 else 94.0, 1.0) for i in range(rounds)]
        summary = paired.summarise({"a": reference, "b": variant}, "a")["b"]
        assert summary.paired_mean == pytest.approx(-0.08)
        return float(summary.standard_error)

    assert error(16) == pytest.approx(2 * error(64), rel=0.05)


def test_the_report_gives_each_variant_its_paired_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summaries = {
        "no-metrics": paired.Summary(400.0, 2500.0, 0.0, 0.0, 0.0),
        "tracing-0.1": paired.Summary(372.0, 2700.0, -0.078, -0.088, 0.016),
    }
    paired.report(summaries, "heading")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| no-metrics | 400 | 2500 | +0.0 % | +0.0 ± 0.0 % |",
        "| tracing-0.1 | 372 | 2700 | -7.8 % | -8.8 ± 1.6 % |",
    ]


def test_fresh_servers_serve_each_block_of_rounds() -> None:
    assert paired.blocks(12, 5) == [range(0, 5), range(5, 10), range(10, 12)]
    assert paired.blocks(4, 5) == [range(0, 4)]
    assert [len(block) for block in paired.blocks(40, 1)] == [1] * 40


def test_pinning_gives_the_servers_the_last_cpu_and_the_load_the_others() -> None:
    assert paired.split_cpus({0, 1}) == ({1}, {0})
    assert paired.split_cpus({0, 2, 5, 7}) == ({7}, {0, 2, 5})
    with pytest.raises(ValueError, match="two or more CPUs"):
        paired.split_cpus({3})


def test_a_process_started_inside_the_affinity_block_inherits_it() -> None:
    cpus = os.sched_getaffinity(0)
    one = {min(cpus)}
    with paired.cpu_affinity(one):
        inside = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert inside.strip() == str(sorted(one))
    assert os.sched_getaffinity(0) == cpus
