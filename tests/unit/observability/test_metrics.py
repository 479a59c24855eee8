"""Metric labels stay bounded, /metrics speaks the Prometheus format, basic auth guards it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pcf_api.observability.metrics import (
    MAX_OPERATION_NAMES,
    Metrics,
    MetricsEndpoint,
    OperationNames,
    health_metrics,
    method_label,
    route_label,
)

pytestmark = pytest.mark.anyio


def test_operation_names_are_kept_up_to_the_cap_then_other() -> None:
    names = OperationNames(capacity=3)
    labels = [names.label(name) for name in ("A", "B", "A", "C", "D", "B")]
    assert labels == ["A", "B", "A", "C", "other", "B"]


@pytest.mark.parametrize("name", ["has space", "1starts_with_digit", "x" * 65, "émoji", "a-b"])
def test_malformed_operation_names_never_become_labels(name: str) -> None:
    assert OperationNames().label(name) == "other"


def test_anonymous_operations_have_their_own_label() -> None:
    assert OperationNames().label(None) == "anonymous"
    assert OperationNames().label("") == "anonymous"


def test_routes_are_templates_and_anything_else_is_other() -> None:
    assert route_label("/graphql") == "/graphql"
    assert route_label("/health/ready") == "/health/ready"
    assert route_label("/notes/123") == "other"
    assert method_label("POST") == "POST"
    assert method_label("BREW") == "other"


def samples(metrics: Metrics, name: str) -> list[Any]:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name == name:
            return list(family.samples)
    return []


def test_a_flood_of_operation_names_stays_under_the_label_budget() -> None:
    metrics = Metrics(version="1", environment="test")
    for index in range(5000):
        for status in ("ok", "INVALID_INPUT", "NOT_FOUND", "UNAUTHORIZED"):
            metrics.observe_graphql("query", f"op{index}", status, 0.01)
    names = {sample.labels["operation_name"] for sample in samples(metrics, "graphql_request")}
    assert len(names) == MAX_OPERATION_NAMES + 1
    assert "other" in names
    total = [s for s in samples(metrics, "graphql_request") if s.name.endswith("_total")]
    assert len(total) < 1000


class FakeHealth:
    def __init__(self, report: dict[str, Any]) -> None:
        self._report = report

    def report(self) -> dict[str, Any]:
        return self._report


def test_health_results_become_gauges_and_unchecked_services_are_left_out() -> None:
    health = FakeHealth(
        {
            "status": "degraded",
            "services": {
                "database": {"critical": True, "status": "up", "latency_ms": 2.0},
                "authorization": {"critical": False, "status": "down", "latency_ms": 1500.0},
                "later": {"critical": False, "status": "unknown"},
            },
        }
    )
    families = {family.name: family for family in health_metrics(health)}
    readiness = {s.labels["status"]: s.value for s in families["pcf_api_readiness"].samples}
    assert readiness == {"starting": 0, "healthy": 0, "degraded": 1, "unhealthy": 0}
    up = {s.labels["service"]: s.value for s in families["external_service_health"].samples}
    assert up == {"database": 1.0, "authorization": 0.0}
    latency = {
        s.labels["service"]: s.value for s in families["external_service_latency_seconds"].samples
    }
    assert latency == {"database": 0.002, "authorization": 1.5}


def endpoint_client(password: str | None) -> httpx.AsyncClient:
    metrics = Metrics(version="1", environment="test")
    app = MetricsEndpoint(metrics, username="prometheus", password=password)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    async with endpoint_client(None) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "pcf_api_build_info" in response.text
    assert "process_cpu_seconds_total" in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("prometheus", "wrong"),
        basic("someone", "s3cret-metrics-pw"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer s3cret-metrics-pw"},
    ],
)
async def test_basic_auth_refuses_anything_but_the_right_pair(headers: dict[str, str]) -> None:
    async with endpoint_client("s3cret-metrics-pw") as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="metrics"'
    assert "pcf_api_build_info" not in response.text


async def test_basic_auth_lets_the_right_pair_in() -> None:
    async with endpoint_client("s3cret-metrics-pw") as client:
        response = await client.get("/metrics", headers=basic("prometheus", "s3cret-metrics-pw"))
    assert response.status_code == 200
    assert "pcf_api_build_info" in response.text
