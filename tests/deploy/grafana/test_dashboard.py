"""deploy/grafana/pcf-api.json: a dashboard Grafana can load, with the panels the issue asks for,
valid PromQL on documented metrics of the selected job only.

That every query returns data from a live service is tests/integration/test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from support import grafana
from support.prometheus import DASHBOARD, is_documented, tool
from support.promql import selectors

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
REQUIRED_PANELS = {
    "Request rate",
    "Error ratio",
    "/graphql latency",
    "Active subscriptions",
    "Database pool",
    "Authorization cache hit ratio",
    "Rate-limit rejections",
    "CPU",
    "Memory",
    "File descriptors",
    "Replica count",
}
SCOPE = {"namespace": ("=~", "$namespace"), "job": ("=~", "$job")}


def dashboard() -> dict[str, Any]:
    return grafana.load(DASHBOARD)


def variable_selector(variable: dict[str, Any]) -> str:
    """The selector of a query variable's ``label_values(selector, label)``."""
    selector, _ = grafana.label_values(grafana.variable_query(variable))
    assert selector is not None, variable["name"]
    return selector


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39
    assert board["uid"] == "pcf-api"
    assert board["title"] == "pcf-api"
    assert "id" not in board or board["id"] is None  # provisioned or imported, never pinned
    (datasource,) = [v for v in grafana.variables(board) if v["type"] == "datasource"]
    assert (datasource["name"], datasource["query"]) == ("datasource", "prometheus")
    names = [variable["name"] for variable in grafana.variables(board)]
    assert names == ["datasource", "namespace", "job", "instance"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    board = dashboard()
    for variable in grafana.variables(board):
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in grafana.panels(board):
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_have_unique_ids_refids_and_do_not_overlap() -> None:
    board = dashboard()
    all_panels = list(grafana.panels(board))
    ids = Counter(panel["id"] for panel in all_panels)
    assert max(ids.values()) == 1, ids
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        box = panel["gridPos"]
        assert box["x"] >= 0, panel["title"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_issue_s_panels_are_there() -> None:
    titles = {panel["title"] for panel in grafana.panels(dashboard())}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles


def test_latency_shows_p50_p95_p99_of_graphql_requests() -> None:
    (panel,) = [p for p in grafana.panels(dashboard()) if p["title"] == "/graphql latency"]
    quantiles = []
    for target in panel["targets"]:
        expr = target["expr"]
        assert expr.startswith("histogram_quantile(")
        (selector,) = selectors(expr)
        assert selector.metric == "http_request_duration_seconds_bucket"
        assert any(m.label == "route" and m.value == "/graphql" for m in selector.matchers)
        quantiles.append(expr.split("(", 1)[1].split(",", 1)[0])
    assert quantiles == ["0.5", "0.95", "0.99"]


def test_every_query_reads_documented_metrics_of_the_selected_job() -> None:
    board = dashboard()
    for target in grafana.targets(board):
        found = selectors(target.expr)
        assert found, target
        for selector in found:
            assert selector.metric == "up" or is_documented(selector.metric), (target, selector)
            matchers = {m.label: (m.op, m.value) for m in selector.matchers}
            assert {label: matchers.get(label) for label in SCOPE} == SCOPE, (target, selector)
    for variable in grafana.variables(board):
        if variable["type"] == "query":
            (parsed,) = selectors(variable_selector(variable))
            assert parsed.metric == "pcf_api_build_info", variable["name"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """Offline: each query, its variables substituted, as a recording rule for promtool."""
    board = dashboard()
    values = {"namespace": ".*", "job": "pcf-api", "instance": ".*"}
    queries = [grafana.substitute(t.expr, values) for t in grafana.targets(board)]
    queries += [
        f"count({grafana.substitute(variable_selector(variable), values)})"
        for variable in grafana.variables(board)
        if variable["type"] == "query"
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query:{number}", "expr": query}
                    for number, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(json.dumps(rules))
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout
