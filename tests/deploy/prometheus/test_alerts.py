"""deploy/prometheus/alerts.yaml: clean for promtool, every alert unit-tested firing and silent,
every alert documented with a runbook that exists, every expression on documented metrics.

That each expression returns data from a live service, and each alert fires on a service in
trouble: tests/integration/test_prometheus_scrape.py.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from pcf_api.errors import ErrorCode
from pcf_api.observability.metrics import LATENCY_BUCKETS
from support.prometheus import (
    OPERATIONS,
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    anchors,
    github_anchor,
    is_documented,
    tool,
)
from support.promql import selectors

SEVERITIES = {"critical", "warning"}
# The issue's list: each must be covered by at least one alert of that name.
REQUIRED_ALERTS = {
    "PcfApiHighErrorRatio",
    "PcfApiHighLatencyP99",
    "PcfApiTargetDown",
    "PcfApiReadinessFlapping",
    "PcfApiDatabaseUnavailable",
    "PcfApiAuthorizationDegraded",
    "PcfApiAuthorizationFailingClosed",
    "PcfApiWriteQueueNearLimit",
    "PcfApiRestarting",
    "PcfApiAvailabilityBudgetFastBurn",
    "PcfApiAvailabilityBudgetSlowBurn",
    "PcfApiLatencyBudgetFastBurn",
    "PcfApiLatencyBudgetSlowBurn",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recordings() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


def test_promtool_finds_the_rules_clean() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout, checked.stdout
    assert "WARNING" not in checked.stdout + checked.stderr


def test_the_promtool_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS.glob("*.test.yaml"))
    assert files
    tested = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(files), tested.stdout


def test_each_alert_is_unit_tested_firing_and_silent_and_each_recording_checked() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    evaluated = ""
    for path in RULE_TESTS.glob("*.test.yaml"):
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../alerts.yaml"], path
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
            evaluated += " ".join(check["expr"] for check in case.get("promql_expr_test", []))
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "never tested firing"
    assert names - silent == set(), "never tested staying silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"
    unchecked = {rule["record"] for rule in recordings() if rule["record"] not in evaluated}
    assert unchecked == set(), "recording rules no promql_expr_test evaluates"


def test_the_issue_s_alerts_exist_with_unique_names() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


def test_each_alert_has_a_severity_a_summary_a_description_and_a_runbook_that_exists() -> None:
    operations = OPERATIONS.read_text()
    existing = anchors(operations)
    alerts_section = operations.split("\n## Alerts\n", 1)
    assert len(alerts_section) == 2, "docs/operations.md has no '## Alerts' section"
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        anchor = github_anchor(name)
        assert annotations["runbook_url"] == f"{RUNBOOKS}#{anchor}", name
        assert anchor in existing, f"docs/operations.md has no section for {name}"
        assert f"\n### {name}\n" in alerts_section[1], f"{name}'s runbook is not under ## Alerts"


def test_every_runbook_under_alerts_belongs_to_an_alert() -> None:
    section = OPERATIONS.read_text().split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^### (\S+)$", section, re.M))
    assert documented == {rule["alert"] for rule in alerts()}


def test_every_expression_reads_documented_metrics_of_the_pcf_api_job_only() -> None:
    recorded = {rule["record"] for rule in recordings()}
    for rule in rules():
        found = selectors(rule["expr"])
        assert found, rule
        for selector in found:
            if selector.metric in recorded:
                continue
            assert selector.metric == "up" or is_documented(selector.metric), (rule, selector)
            jobs = [matcher for matcher in selector.matchers if matcher.label == "job"]
            assert [(m.op, m.value) for m in jobs] == [("=~", ".*pcf-api.*")], (rule, selector)


def test_recording_rules_follow_the_naming_convention_and_are_used() -> None:
    used = " ".join(rule["expr"] for rule in alerts())
    for rule in recordings():
        level, metric, operations = rule["record"].split(":")
        assert (level, bool(metric), bool(operations)) == ("pcf_api", True, True), rule
        assert rule["record"] in used, f"{rule['record']} is recorded but no alert reads it"


def test_server_side_failures_are_exactly_the_codes_answered_with_5xx() -> None:
    server_side = {code.value for code in ErrorCode if code.http_status >= 500}
    regexes = {
        matcher.value
        for rule in recordings()
        for selector in selectors(rule["expr"])
        for matcher in selector.matchers
        if selector.metric == "graphql_request_total" and matcher.label == "status"
    }
    assert len(regexes) == 1
    assert set(regexes.pop().split("|")) == server_side


def test_the_latency_slo_threshold_is_a_bucket_boundary() -> None:
    thresholds = {
        matcher.value
        for rule in recordings()
        for selector in selectors(rule["expr"])
        for matcher in selector.matchers
        if matcher.label == "le"
    }
    assert thresholds == {"0.5"}
    assert 0.5 in LATENCY_BUCKETS
