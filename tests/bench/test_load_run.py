"""bench/load/run.py (make load-test): the settings it gives the server, and one short real run —
two steps of a few seconds against a pcf-api it starts on PostgreSQL, driven by locust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.load import run
from support.databases import ADMIN_DSN

ROOT = Path(__file__).resolve().parents[2]
LOAD = ROOT / "bench" / "load"


def test_the_server_gets_the_settings_the_chart_gives_a_pod() -> None:
    settings = run.chart_settings()
    config = yaml.safe_load((ROOT / "deploy/helm/pcf-api/values.yaml").read_text())["config"]
    assert settings["PCF_ENVIRONMENT"] == config["environment"] == "production"
    assert settings["PCF_DATABASE__POOL_SIZE"] == str(config["database"]["pool_size"])
    assert settings["PCF_LOG__LEVEL"] == config["log"]["level"]
    assert settings["PCF_METRICS__PORT"] == str(config["metrics"]["port"])
    assert "PCF_AUTH__ISSUER" not in settings  # empty values are left out, as in the ConfigMap
    assert all(value != "" for value in settings.values())


def test_chart_settings_render_like_the_helm_helper(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "config:\n  environment: staging\n  graphql: {introspection: false, hosts: [a, b]}\n"
        "  metrics: {port: 0}\n  auth: {audience: ''}\n"
    )
    assert run.chart_settings(values) == {
        "PCF_ENVIRONMENT": "staging",
        "PCF_GRAPHQL__INTROSPECTION": "false",
        "PCF_GRAPHQL__HOSTS": "a,b",
    }


def test_chart_cpu_request(tmp_path: Path) -> None:
    assert run.chart_cpu_request() == pytest.approx(0.5)
    values = tmp_path / "values.yaml"
    values.write_text("resources: {requests: {cpu: 2}}\n")
    assert run.chart_cpu_request(values) == 2


def test_arguments_are_checked() -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--rates", "0"])
    with pytest.raises(SystemExit):
        run.parse_args(["--auth", "demo"])  # only with --url
    with pytest.raises(SystemExit):
        run.parse_args(["--url", "http://127.0.0.1:1", "--auth", "hs256"])
    args = run.parse_args(["--rates", "10,30", "--user-rate", "4"])
    assert [step.users for step in args.steps] == [3, 8]


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_a_short_real_run_reports_every_step_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            str(LOAD / "run.py"),
            "--rates",
            "10,20",
            "--step-seconds",
            "6",
            "--settle-seconds",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "LOAD_TEST_POSTGRES_DSN": ADMIN_DSN},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert time.monotonic() - started < 60
    report: dict[str, Any] = json.loads((out / "results.json").read_text())
    steps = report["steps"]
    assert [step["offered_rps"] for step in steps] == [10, 20]
    for step in steps:
        assert step["requests"] > 0
        assert step["errors"] == 0, step["error_kinds"]
        assert step["error_rate"] == 0
        assert step["rps"] == pytest.approx(step["offered_rps"], rel=0.5)
        assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
        assert step["cpu"]["server"] > 0  # /proc/<pid>/stat of the started server
        assert step["cpu"]["database"] is not None
        # The whole mix ran: reads, search and writes (the search once per 10 s per client).
        assert {"notes", "note", "update"} <= set(step["operations"])
    assert {"search", "create"} <= {name for step in steps for name in step["operations"]}
    assert report["failed_total"] == 0
    target = report["meta"]["target"]
    assert target["started_here"]
    assert target["database"] == "postgres"
    assert target["settings"]["PCF_ENVIRONMENT"] == "production"
    table = (out / "steps.md").read_text()
    assert table.count("\n| ") == 3  # header and two steps
    assert (out / "steps.csv").read_text().count("\n") == 3
    assert "| 2 | 10 | 20 |" in completed.stdout
