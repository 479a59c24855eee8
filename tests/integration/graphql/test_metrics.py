"""/metrics on a live service: the specified names, valid for promtool, bounded, secret-free."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pcf_api.composition import build_service

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

HS256_SECRET = "metrics-test-hs256-Secret-0123456789abcdef"
VARIABLE_SECRET = "variable-value-that-must-not-leak-42"

SPECIFIED = {
    "graphql_request_total",
    "graphql_request_duration_seconds",
    "graphql_active_subscriptions",
    "http_request_total",
    "http_request_duration_seconds",
    "database_connection_pool_size",
    "database_connection_pool_checked_out",
    "database_query_total",
    "database_query_duration_seconds",
    "database_write_queue_depth",
    "external_service_health",
    "external_service_latency_seconds",
    "authorization_cache_hits_total",
    "authorization_cache_misses_total",
    "rate_limit_rejections_total",
    "rate_limit_storage_fallback",
    "rate_limit_fallback_decisions_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "pcf_api_readiness",
}


async def drive(client: GraphQLClient) -> None:
    """A named query, a mutation, an invalid document and a search past its budget."""
    await client.create()
    await client.data("query Listing { notes { totalCount } }")
    await client.post("{ nope }")
    for _ in range(11):
        await client.post('{ searchNotes(query: "x") { id } }')


def sample_names(text: str) -> set[str]:
    """Every family name (a histogram's too) and every sample name (counters end in _total)."""
    families = list(text_string_to_metric_families(text))
    return {family.name for family in families} | {
        sample.name for family in families for sample in family.samples
    }


async def test_the_specified_metrics_are_exported_with_bounded_labels(database_url: str) -> None:
    async with running(build_service(settings_for(database_url))) as http:
        await drive(GraphQLClient(http))
        text = (await http.get("/metrics")).text

    exported = sample_names(text)
    assert not SPECIFIED - exported, SPECIFIED - exported
    listing = 'operation_name="Listing",operation_type="query",status="ok"'
    assert f"graphql_request_total{{{listing}}} 1.0" in text
    assert 'operation_type="mutation"' in text
    assert 'status="INVALID_INPUT"' in text or 'status="GRAPHQL_VALIDATION_FAILED"' in text
    assert 'rate_limit_rejections_total{budget="search"} 1.0' in text
    assert 'http_request_total{method="POST",route="/graphql",status="200"}' in text
    assert 'database_query_total{operation="insert"}' in text
    assert 'external_service_health{critical="true",service="database"} 1.0' in text


@pytest.mark.host_only  # promtool
async def test_promtool_finds_the_exposition_clean(database_url: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is part of the test toolchain (apt: prometheus)"
    async with running(build_service(settings_for(database_url))) as http:
        await drive(GraphQLClient(http))
        text = (await http.get("/metrics")).text
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    assert checked.stderr.strip() == ""


async def test_no_secret_reaches_the_metrics(database_url: str) -> None:
    settings = settings_for(
        database_url,
        PCF_AUTH__HS256_SECRET=HS256_SECRET,
        PCF_METRICS__PASSWORD="metrics-password-0123456789",
    )
    token = jwt.encode({"sub": "alice", "exp": time.time() + 600}, HS256_SECRET, "HS256")
    async with running(build_service(settings)) as http:
        client = GraphQLClient(http)
        await client.post(
            "query Secretive($q: String!) { searchNotes(query: $q) { id } }",
            {"q": VARIABLE_SECRET},
            headers={"Authorization": f"Bearer {token}"},
        )
        unauthenticated = await http.get("/metrics")
        text = (await http.get("/metrics", auth=("prometheus", "metrics-password-0123456789"))).text
    assert unauthenticated.status_code == 401
    assert "graphql_request_total" in text
    for secret in (HS256_SECRET, token, VARIABLE_SECRET, "metrics-password-0123456789"):
        assert secret not in text


@pytest.mark.parametrize("field_timing", [True, False])
async def test_top_level_resolvers_are_timed_only_when_asked(
    database_url: str, field_timing: bool
) -> None:
    settings = settings_for(database_url, PCF_METRICS__FIELD_TIMING=str(field_timing).lower())
    async with running(build_service(settings)) as http:
        await GraphQLClient(http).data("{ notes { totalCount } }")
        text = (await http.get("/metrics")).text
    timed = 'graphql_field_resolution_duration_seconds_count{field="Query.notes"} 1.0' in text
    assert timed is field_timing
