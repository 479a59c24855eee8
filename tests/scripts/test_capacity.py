"""scripts/capacity.py: the HPA algorithm against hand-computed cases, the target recommendation
from a synthetic load curve, the inputs read from the chart and the alert rules, the report."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


cap = load_script(ROOT / "scripts" / "capacity.py")
Policy, Rules, HpaSpec, Hpa = cap.Policy, cap.Rules, cap.HpaSpec, cap.Hpa

PERMISSIVE_DOWN = Rules(0, "Max", (Policy("Percent", 100, 15),))


def replicas(
    current: int, average: float, target: float, ready: int | None = None, unready: int = 0
) -> int:
    desired: int = cap.metric_replicas(
        current,
        current - unready if ready is None else ready,
        unready,
        average=average,
        target=target,
        tolerance=0.1,
    )
    return desired


# --- one metric's proposal ------------------------------------------------------------------


def test_within_the_tolerance_nothing_changes() -> None:
    assert replicas(4, average=105, target=100) == 4  # ratio 1.05
    assert replicas(4, average=91, target=100) == 4  # ratio 0.91
    assert replicas(10, average=109, target=100) == 10  # ratio 1.09: 10.9 pods' worth, no change


def test_outside_the_tolerance_desired_is_ceil_of_ratio_times_ready_pods() -> None:
    assert replicas(4, average=111, target=100) == 5  # ceil(4.44)
    assert replicas(4, average=250, target=100) == 10  # ceil(10.0)
    assert replicas(4, average=70, target=100) == 3  # ceil(2.8)
    assert replicas(10, average=12, target=100) == 2  # ceil(1.2)
    assert replicas(3, average=150, target=50) == 9  # requests/s: AverageValue works alike


def test_starting_pods_count_as_idle_when_scaling_up() -> None:
    # 2 ready at 150 % of target, 2 starting: (150 x 2) / (4 x 100) = 0.75 -> would be a scale
    # down, so nothing changes.
    assert replicas(4, average=150, target=100, ready=2, unready=2) == 4
    # 2 ready at 300 %: (300 x 2) / 400 = 1.5 -> ceil(1.5 x 4) = 6.
    assert replicas(4, average=300, target=100, ready=2, unready=2) == 6
    # 2 ready at 210 %: 420 / 400 = 1.05, within the tolerance.
    assert replicas(4, average=210, target=100, ready=2, unready=2) == 4
    # Scaling down ignores starting pods: 1 ready at 40 % -> ceil(0.4 x 1) = 1.
    assert replicas(4, average=40, target=100, ready=1, unready=3) == 1
    assert replicas(4, average=40, target=100, ready=0, unready=4) == 4  # no metrics at all


# --- the controller: behavior, stabilization, clamps ----------------------------------------


def test_scale_up_100_percent_or_4_pods_per_15_s_whichever_is_more() -> None:
    """Kubernetes' default scale-up: the limit grows from the replica count at the start of
    the period (replicas minus what was added within the last 15 s)."""
    hpa = Hpa(HpaSpec(min_replicas=1, max_replicas=100))  # default behavior
    assert hpa.spec.scale_up == cap.DEFAULT_SCALE_UP
    assert hpa.reconcile(0, 2, [50]) == 6  # max(ceil(2 x 2), 2 + 4)
    assert hpa.reconcile(10, 6, [50]) == 6  # 4 added 10 s ago: the period started at 2
    assert hpa.reconcile(15, 6, [50]) == 12  # the event at 0 s is out: max(12, 10)
    assert hpa.reconcile(30, 12, [50]) == 24  # max(24, 16)
    assert hpa.reconcile(45, 24, [50]) == 48
    assert hpa.reconcile(60, 48, [50]) == 50  # the metric's proposal is reached
    big = Hpa(HpaSpec(1, 100))
    assert big.reconcile(0, 10, [100]) == 20  # 100 % adds more than 4 pods from 10 on


def test_scale_up_select_min_takes_the_smaller_limit() -> None:
    up = Rules(0, "Min", (Policy("Percent", 100, 60), Policy("Pods", 4, 60)))
    hpa = Hpa(HpaSpec(1, 100, scale_up=up))
    assert hpa.reconcile(0, 10, [100]) == 14  # min(20, 14)
    assert hpa.reconcile(30, 14, [100]) == 14  # within the 60 s period: already 4 added
    assert hpa.reconcile(61, 14, [100]) == 18


def test_chart_scale_down_20_percent_or_2_pods_per_minute_whichever_removes_fewer() -> None:
    down = Rules(0, "Min", (Policy("Percent", 20, 60), Policy("Pods", 2, 60)))
    hpa = Hpa(HpaSpec(2, 100, scale_down=down))
    assert hpa.reconcile(0, 20, [2]) == 18  # max(int(20 x 0.8) = 16, 20 - 2 = 18)
    assert hpa.reconcile(30, 18, [2]) == 18  # the period started at 20: floor still 18
    assert hpa.reconcile(61, 18, [2]) == 16  # max(int(14.4), 16)
    hpa = Hpa(HpaSpec(2, 100, scale_down=Rules(0, "Max", down.policies)))
    assert hpa.reconcile(0, 20, [2]) == 16  # Max removes more: min(16, 18)
    hpa = Hpa(HpaSpec(2, 100, scale_down=Rules(0, "Disabled", down.policies)))
    assert hpa.reconcile(0, 20, [2]) == 20


def test_scale_down_stabilization_keeps_the_highest_recent_recommendation() -> None:
    hpa = Hpa(HpaSpec(1, 100, scale_down=Rules(300, "Max", PERMISSIVE_DOWN.policies)))
    assert hpa.reconcile(0, 10, [10]) == 10
    assert hpa.reconcile(100, 10, [7]) == 10  # 10 was recommended within 300 s
    assert hpa.reconcile(200, 10, [4]) == 10
    assert hpa.reconcile(299, 10, [4]) == 10  # 0 s is still after the cutoff (299 - 300)
    # At 300 s it is not (strictly after, as in horizontal.go): the highest of the
    # recommendations at 100 s (7), 200 s and 299 s (4) and now (4) is 7.
    assert hpa.reconcile(300, 10, [4]) == 7
    assert hpa.reconcile(400, 7, [4]) == 4
    assert hpa.reconcile(401, 4, [9]) == 9  # scaling up is not held back (window 0)


def test_scale_up_stabilization_keeps_the_lowest_recent_recommendation() -> None:
    hpa = Hpa(HpaSpec(1, 100, scale_up=Rules(60, "Max", cap.DEFAULT_SCALE_UP.policies)))
    assert hpa.reconcile(0, 4, [4]) == 4
    assert hpa.reconcile(15, 4, [8]) == 4  # 4 recommended within 60 s
    assert hpa.reconcile(30, 4, [6]) == 4
    assert hpa.reconcile(61, 4, [8]) == 6  # lowest of (15 s: 8, 30 s: 6, 61 s: 8)


def test_min_and_max_clamp() -> None:
    hpa = Hpa(HpaSpec(2, 10))
    assert hpa.reconcile(0, 8, [50]) == 10  # the policies would allow 16
    assert Hpa(HpaSpec(2, 10)).reconcile(0, 12, [12]) == 10  # above max: max, whatever
    assert Hpa(HpaSpec(2, 10)).reconcile(0, 1, [1]) == 2  # below min: min
    assert Hpa(HpaSpec(2, 10, scale_down=PERMISSIVE_DOWN)).reconcile(0, 5, [1]) == 2
    assert Hpa(HpaSpec(2, 10)).reconcile(0, 0, [5]) == 0  # zero replicas: scaling disabled


def test_the_largest_proposal_wins_and_none_keeps_the_count() -> None:
    assert Hpa(HpaSpec(1, 20)).reconcile(0, 4, [3, 7, 5]) == 7
    assert Hpa(HpaSpec(1, 20)).reconcile(0, 4, []) == 4


# --- inputs from their one source ------------------------------------------------------------


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "helm" / "pcf-api" / "values.yaml").read_text()
    )
    return values


def test_the_chart_behavior_is_read_from_values_yaml() -> None:
    values = chart_values()
    chart = cap.Chart.from_values(values)
    scaling = values["autoscaling"]
    assert chart.hpa.min_replicas == scaling["minReplicas"]
    assert chart.hpa.max_replicas == scaling["maxReplicas"]
    assert chart.cpu_target_percent == scaling["targetCPUUtilizationPercentage"]
    assert chart.rps_target == float(scaling["requestsPerSecond"]["averageValue"])
    assert chart.cpu_request == cap.cpu_cores(values["resources"]["requests"]["cpu"])
    for rules, spec in (
        (chart.hpa.scale_up, scaling["behavior"]["scaleUp"]),
        (chart.hpa.scale_down, scaling["behavior"]["scaleDown"]),
    ):
        assert rules.stabilization_window_seconds == spec["stabilizationWindowSeconds"]
        assert rules.select_policy == spec["selectPolicy"]
        assert [(p.type, p.value, p.period_seconds) for p in rules.policies] == [
            (p["type"], p["value"], p["periodSeconds"]) for p in spec["policies"]
        ]


def test_a_behavior_left_out_takes_kubernetes_defaults() -> None:
    values = chart_values()
    values["autoscaling"]["behavior"] = {"scaleDown": {"policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]}}  # fmt: skip
    chart = cap.Chart.from_values(values)
    assert chart.hpa.scale_up == cap.DEFAULT_SCALE_UP
    assert chart.hpa.scale_down == Rules(300, "Max", (Policy("Pods", 1, 60),))
    assert cap.cpu_cores("250m") == 0.25
    assert cap.cpu_cores(2) == 2


def test_the_slo_is_read_from_the_alert_rules() -> None:
    slo = cap.Slo.from_rules((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert slo.latency_seconds == 0.5
    assert slo.latency_objective == pytest.approx(0.99)
    assert slo.availability_budget == pytest.approx(0.001)
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == "pcf_api:slo_latency_slow:ratio_rate5m":
                rule["expr"] = rule["expr"].replace('le="0.5"', "le=bogus")
    with pytest.raises(ValueError, match="expected shape"):
        cap.Slo.from_rules(yaml.safe_dump(rules))


# --- recommendation from a synthetic curve ----------------------------------------------------

SLO = cap.Slo(latency_seconds=0.5, latency_objective=0.99, availability_budget=0.001)
# (offered, achieved req/s, p99 ms, error rate); the server's CPU is exactly 1.6 ms per request.
CURVE = [
    (50, 50, 30, 0.0),
    (100, 100, 35, 0.0),
    (200, 199, 50, 0.0),
    (300, 298, 90, 0.0),
    (400, 395, 250, 0.0),
    (500, 470, 900, 0.0),
    (600, 480, 2500, 0.02),
]


def points(curve: Sequence[tuple[float, float, float, float]] = CURVE) -> list[Any]:
    return [
        cap.Point(offered=o, rps=r, p50_ms=p / 3, p99_ms=p, error_rate=e, cores=0.0016 * r)
        for o, r, p, e in curve
    ]


def test_capacity_is_the_last_step_within_the_slo() -> None:
    assert cap.capacity(points(), SLO) == (395, False)
    # Errors over the availability budget break the SLO too, whatever the latency.
    noisy = [*CURVE[:3], (300, 298, 90, 0.002), *CURVE[4:]]
    assert cap.capacity(points(noisy), SLO) == (199, False)
    # A later step that happens to be fast again does not count past the first failure.
    bumpy = [*CURVE[:5], (500, 470, 900, 0.0), (600, 520, 300, 0.0)]
    assert cap.capacity(points(bumpy), SLO) == (395, False)
    # Never broken: a lower bound.
    assert cap.capacity(points(CURVE[:4]), SLO) == (298, True)
    with pytest.raises(ValueError, match="first step"):
        cap.capacity(points([(50, 50, 600, 0.0)]), SLO)


def test_recommendation_from_the_curve() -> None:
    chart = cap.Chart.from_values(chart_values())
    model = cap.PodModel.from_points(points(), chart.cpu_limit)
    assert model.saturation_rps == 480
    assert model.cpu_per_rps == pytest.approx(0.0016)
    assert model.cpu_intercept == pytest.approx(0.0, abs=1e-9)
    rec = cap.recommend(points(), SLO, chart, model, growth_factor=2.0, reaction_seconds=65)
    assert rec.capacity_rps == 395
    # 395 / (1.1 x 2) = 179.5 -> 175; CPU at 175 req/s: 0.28 cores = 56 % of 0.5 -> 55 %.
    assert rec.bound_rps == rec.target_rps == 175
    assert not rec.simulated
    assert rec.cpu_cores == pytest.approx(0.28)
    assert rec.cpu_percent == 55
    steady = cap.recommend(points(), SLO, chart, model, growth_factor=1.0, reaction_seconds=65)
    assert steady.target_rps == 355  # 395 / 1.1 = 359.1
    assert cap.cpu_percent(model, chart, 10) == 5  # never below 5 %


def test_largest_passing_bisects_on_multiples_of_5() -> None:
    tried: list[float] = []

    def check(rps: float) -> bool:
        tried.append(rps)
        return rps <= 243

    assert cap.largest_passing(check, 175, 359) == 240
    assert len(tried) <= 7  # bisection, not a scan of 37 candidates
    assert cap.largest_passing(lambda rps: False, 175, 359) == 175  # the bound stays
    assert cap.largest_passing(lambda rps: True, 175, 359) == 355
    assert cap.largest_passing(lambda rps: True, 180, 179) == 180  # nothing to search


def test_pod_model_interpolates_and_stops_at_the_throughput_ceiling() -> None:
    model = cap.PodModel.from_points(points(), cpu_limit=1.0)
    assert model.p99_ms(10) == 30
    assert model.p99_ms(150) == pytest.approx(35 + 15 * 50 / 99)
    assert model.p99_ms(10_000) == 2500
    assert model.cores(10_000) == 1.0  # the CPU limit
    assert model.rps_at_cores(0.32) == pytest.approx(200)
    overloaded = [*CURVE[:5], (500, 390, 3000, 0.0)]  # throughput fell: not part of the curve
    assert cap.PodModel.from_points(points(overloaded), 1.0).saturation_rps == 395


def test_growth_is_the_largest_rise_over_the_reaction_time() -> None:
    assert cap.growth(lambda t: 100.0 if t < 50 else 300.0, seconds=100, horizon=10) == 3.0
    assert cap.growth(lambda t: 100.0, seconds=100, horizon=10) == 1.0
    profile = cap.Profile(peak=1000, trough=150, spike_factor=2.0)
    assert profile(4 * 3600) == pytest.approx(150)
    assert profile(16 * 3600) == pytest.approx(1000)
    flat = cap.Profile(peak=1000, trough=150, spike_factor=1.0)
    assert profile(19 * 3600 + 60) == pytest.approx(2 * flat(19 * 3600 + 60))
    assert profile(19 * 3600 - 1) == pytest.approx(flat(19 * 3600 - 1))
    assert profile.spike(19 * 3600 + 30) == pytest.approx(1.5)
    assert profile.spike(19 * 3600 + 60 + 600 + 150) == pytest.approx(1.5)
    assert cap.growth(profile, cap.DAY, 65) == pytest.approx(2.0, rel=0.02)


# --- the simulation -------------------------------------------------------------------------


def test_simulation_follows_the_hpa_by_hand() -> None:
    """900 req/s from the first second, 2 pods, a target of 100 req/s per pod, pods ready at
    once, the metric averaged over 1 s: at 15 s the proposal is ceil(4.5 x 2) = 9 but the
    default policy allows max(4, 2 + 4) = 6; at 30 s: ceil(1.5 x 6) = 9; then at target."""
    values = chart_values()
    values["autoscaling"].update(minReplicas=2, maxReplicas=20, behavior={})
    chart = cap.Chart.from_values(values)
    model = cap.PodModel(((100.0, 20.0), (500.0, 200.0)), 500.0, 0.0, 0.0, 1.0)
    targets = cap.Targets("rps", cpu_percent=1e9, rps=100.0)
    outcome = cap.simulate(
        lambda t: 900.0,
        model,
        chart,
        targets,
        SLO,
        seconds=120,
        warmup=0,
        window_seconds=1,
        ready_seconds=0,
    )
    line = outcome.timeline
    assert line.replicas[15] == 2  # recorded before the sync at 15 s
    assert line.replicas[16] == 6
    assert line.replicas[31] == 9
    assert line.replicas[-1] == 9
    assert outcome.scale_events == 2
    assert outcome.peak_replicas == 9
    assert line.p99_ms[0] == pytest.approx(20 + (450 - 100) * 180 / 400)  # 450 req/s per pod
    assert line.p99_ms[-1] == 20  # 100 req/s per pod
    assert outcome.seconds_over_slo == 0


def test_simulation_queues_what_the_pods_cannot_serve() -> None:
    values = chart_values()
    values["autoscaling"].update(minReplicas=1, maxReplicas=1, behavior={})
    chart = cap.Chart.from_values(values)
    model = cap.PodModel(((100.0, 20.0),), 100.0, 0.0, 0.0, 1.0)
    outcome = cap.simulate(
        lambda t: 150.0 if t < 10 else 50.0,
        model,
        chart,
        cap.Targets("x", 1e9, None),
        SLO,
        seconds=40,
        warmup=0,
        ready_seconds=0,
    )
    p99 = outcome.timeline.p99_ms
    assert p99[0] == pytest.approx(20 + 500)  # 50 waiting for a pod serving 100/s
    assert p99[9] == pytest.approx(20 + 5000)  # 500 waiting
    assert p99[10] == pytest.approx(20 + 4500)  # draining at 50/s
    assert p99[19] == pytest.approx(20)  # drained after 10 more seconds
    assert outcome.seconds_over_slo == 19  # seconds 0..18 (10 s of load then the tail)
    assert outcome.requests_over_slo == pytest.approx((10 * 150 + 9 * 50) / (10 * 150 + 30 * 50))


def test_simulation_starts_pods_late_and_removes_starting_ones_first() -> None:
    values = chart_values()
    values["autoscaling"].update(
        minReplicas=1,
        maxReplicas=10,
        behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
    )
    chart = cap.Chart.from_values(values)
    model = cap.PodModel(((400.0, 20.0),), 400.0, 0.0, 0.0, 1.0)
    outcome = cap.simulate(
        lambda t: 400.0 if t < 16 else 10.0,
        model,
        chart,
        cap.Targets("rps", 1e9, 100.0),
        SLO,
        seconds=60,
        warmup=0,
        window_seconds=1,
        ready_seconds=30,
    )
    line = outcome.timeline
    # 400 req/s on one pod, target 100: ceil(4 x 1) = 4 (within max(2, 1 + 4)); 3 start.
    assert (line.replicas[16], line.ready[16]) == (4, 1)
    # At 30 s the load is 10 req/s on the one ready pod: ceil(0.1 x 1) = 1, and the three
    # starting pods go first, so the ready one stays.
    assert (line.replicas[31], line.ready[31]) == (1, 1)


def test_report_and_plot(tmp_path: Path) -> None:
    results = {
        "meta": {"date": "2026-11-26", "source": "abc", "command": "bench/load/run.py"},
        "steps": [
            {
                "offered_rps": o,
                "rps": r,
                "p50_ms": p / 3,
                "p99_ms": p,
                "error_rate": e,
                "cpu": {"server": 0.0016 * r, "database": 0.1, "client": 0.05, "other": 0.2},
            }
            for o, r, p, e in CURVE
        ],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert cap.main(["--results", str(path), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "capacity.md").read_text()
    assert "| safe bound | 175 req/s |" in report
    chosen = float(report.split("| **requests/s per pod** | **")[1].split("**")[0])
    assert 175 <= chosen <= 355
    assert chosen % 5 == 0
    assert "| 5 | 400 | 395.0 | 83.3 ms | 250 ms | 0.00% | 0.63 | 126% |" in report
    assert "| 6 | 500 | 470.0 |" in report
    assert report.count("**no**") == 2
    assert "chart today: CPU 70 %" in report
    assert "![Load, p99 and replicas over the simulated day](hpa-simulation.png)" in report
    png = (tmp_path / "out" / "hpa-simulation.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000


def test_replace_section() -> None:
    document = f"intro\n{cap.BEGIN}\nold\n{cap.END}\noutro\n"
    assert cap.replace_section(document, "new") == f"intro\n{cap.BEGIN}\nnew\n{cap.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        cap.replace_section("no markers", "new")


def test_docs_capacity_is_current() -> None:
    """docs/capacity.md's generated section matches docs/capacity/load-test.json, the chart and
    the rules: change one of them and `scripts/capacity.py --docs` must be run again."""
    assert cap.main(["--check"]) == 0


def test_check_fails_on_a_stale_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "capacity.md"
    doc.write_text(cap.DOC.read_text().replace("| capacity C |", "| capacity X |"))
    monkeypatch.setattr(cap, "DOC", doc)
    assert cap.main(["--check"]) == 1


def test_recommendation_breaks_with_a_broken_curve() -> None:
    broken = copy.deepcopy(CURVE)
    broken[0] = (50, 50, 700, 0.0)
    with pytest.raises(ValueError, match="first step"):
        cap.recommend(
            points(broken),
            SLO,
            cap.Chart.from_values(chart_values()),
            cap.PodModel.from_points(points(), 1.0),
            growth_factor=2.0,
            reaction_seconds=65,
        )
    assert math.isfinite(cap.PodModel.from_points(points(), 1.0).p99_ms(0))


def test_the_recommended_targets_keep_every_pod_within_the_measured_capacity() -> None:
    results = {
        "steps": [
            {
                "offered_rps": o,
                "rps": r,
                "p50_ms": p / 3,
                "p99_ms": p,
                "error_rate": e,
                "cpu": {"server": 0.0016 * r, "other": 0.9 if o == 100 else 0.1},
            }
            for o, r, p, e in [*CURVE[:1], (100, 100, 800, 0.0), *CURVE[2:]]
        ]
    }
    analysis = cap.analyse(
        results,
        chart_values(),
        (ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text(),
    )
    rec = analysis.recommendation
    # Step 2 (p99 800 ms) had 0.9 cores busy elsewhere: left out, so C is still 395.
    assert [p.disturbed(0.5) for p in analysis.points][:3] == [False, True, False]
    assert rec.capacity_rps == 395
    assert rec.bound_rps == 175
    assert rec.bound_rps <= rec.target_rps <= 395 / 1.1
    today, recommended = analysis.outcomes
    assert recommended.targets.rps == rec.target_rps
    assert recommended.targets.cpu_percent == rec.cpu_percent
    assert recommended.max_per_pod <= rec.capacity_rps
    assert recommended.queued_seconds == 0
    assert recommended.seconds_over_slo == 0
    assert today.targets.rps is None  # the chart's requests/s metric is off by default
    assert analysis.profile.peak == 3 * 395
    with pytest.raises(ValueError, match="every step"):
        cap.analyse(
            results,
            chart_values(),
            (ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text(),
            max_other_cores=0.05,
        )
