"""Every Redis the service uses (rate limits, events, persisted documents) as it fails: one that
refuses (a closed port), one that hangs (a listener that never answers), and one lost while the
service runs (a private `redis-server` the test stops and starts again, through a real
`pcf-api serve` and a real WebSocket client).

Budgets stay enforced, counted per process; no request waits longer than a Redis timeout, and
once a breaker is open none waits at all. An events Redis missing at start keeps the service
``starting`` with one log line per back-off step naming it. Readiness names each Redis; while
it is gone the instance is ``degraded`` (still routed to), open subscriptions end with
SERVICE_UNAVAILABLE (``reason`` EVENTS_UNAVAILABLE) instead of silently missing events, new ones
are refused the same way, and mutations still succeed at once. When Redis returns, so does
everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.graphql.conftest import running, settings_for
from pcf_api.composition import build_service
from support.logs import capture_logs
from support.redis import PrivateRedis, private_redis, refusing_url, silent_listener
from support.servers import DEV_JSON, ServerFactory, ServerProcess
from support.wsclient import SubscriptionClient

pytestmark = pytest.mark.anyio

CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"
NOTE_CREATED = "subscription { noteCreated { id } }"
REDIS_ENTRIES = ("rate_limit_redis", "events_redis", "persisted_queries_redis")


def _create(server: ServerProcess) -> tuple[float, dict[str, Any]]:
    """(seconds taken, body) of one createNote."""
    began = time.monotonic()
    variables = {"i": {"title": "t", "content": "c", "author": "alice"}}
    response = httpx.post(
        f"{server.url}/graphql", json={"query": CREATE, "variables": variables}, timeout=10
    )
    return time.monotonic() - began, response.json()


def _readiness(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{server.url}/health/ready", timeout=5).json()
    return document


async def _until(condition: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.1)


def _redis_entries(server: ServerProcess) -> dict[str, str]:
    services = _readiness(server)["services"]
    return {name: services[name]["status"] for name in REDIS_ENTRIES}


async def _subscribed(client: SubscriptionClient, operation_id: str) -> None:
    await client.subscribe(operation_id, NOTE_CREATED)
    await asyncio.sleep(0.3)  # registered with the broker


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with private_redis(tmp_path) as server:
        yield server


async def test_a_redis_lost_mid_run_is_reported_and_nothing_is_lost_silently(
    server_factory: ServerFactory, tmp_path: Path, redis_server: PrivateRedis
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_HEALTH__CHECK_INTERVAL_SECONDS": "0.2",
            "PCF_EVENTS__BACKEND": "redis",
            "PCF_EVENTS__REDIS_URL": redis_server.url,
            "PCF_EVENTS__REDIS_TIMEOUT_SECONDS": "0.3",
            "PCF_RATE_LIMIT__STORAGE_URL": redis_server.url,
            "PCF_GRAPHQL__PERSISTED_QUERIES_REDIS_URL": redis_server.url,
        }
    )
    server.wait_until_ready()
    await _until(lambda: _readiness(server)["status"] == "healthy")
    assert set(_redis_entries(server).values()) == {"up"}
    ws_url = f"ws://127.0.0.1:{server.port}/graphql"

    async with SubscriptionClient(ws_url) as client:
        await _subscribed(client, "1")
        _, created = await asyncio.to_thread(_create, server)
        note_id = created["data"]["createNote"]["id"]
        assert await client.next_data() == ("1", {"noteCreated": {"id": note_id}})

        redis_server.stop()
        ended = await client.receive(within=10)
        assert ended["type"] == "next", ended
        [error] = ended["payload"]["errors"]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert error["extensions"]["reason"] == "EVENTS_UNAVAILABLE"
        assert (await client.receive())["type"] == "complete"

        await _until(lambda: set(_redis_entries(server).values()) == {"down"})
        assert _readiness(server)["status"] == "degraded"
        ready = await asyncio.to_thread(httpx.get, f"{server.url}/health/ready")
        assert ready.status_code == 200

        # Mutations still succeed, soon without waiting for Redis at all (each would wait
        # 0.55 s for the events and rate-limit timeouts): five take less than two such waits.
        timings = [(await asyncio.to_thread(_create, server)) for _ in range(10)]
        assert all("errors" not in body for _, body in timings), timings
        assert sum(seconds for seconds, _ in timings[5:]) < 1.1, timings

        # A new subscription is refused while events cannot arrive.
        await client.subscribe("2", NOTE_CREATED)
        refused = await client.receive()
        assert refused["payload"]["errors"][0]["extensions"]["reason"] == "EVENTS_UNAVAILABLE"
        assert (await client.receive())["type"] == "complete"

        redis_server.start()
        await _until(lambda: _readiness(server)["status"] == "healthy")
        await _subscribed(client, "3")
        _, created = await asyncio.to_thread(_create, server)
        note_id = created["data"]["createNote"]["id"]
        assert await client.next_data() == ("3", {"noteCreated": {"id": note_id}})

    lines = server.log_lines()
    [lost] = [line for line in lines if line["message"].startswith("events listener lost")]
    assert lost["dependency"] == "events_redis"
    assert [
        line["dependency"]
        for line in lines
        if line["message"] == "rate-limit storage unavailable; limiting per process"
    ] == ["rate_limit_redis"]
    assert not [line for line in lines if "exception" in line]


# --- In process: a Redis that refuses, one that hangs ---------------------------------------


def _limits_and_documents_in(url: str, tmp_path: Path, **env: str) -> Any:
    return settings_for(
        f"sqlite+aiosqlite:///{tmp_path}/n.db",
        PCF_RATE_LIMIT__STORAGE_URL=url,
        PCF_RATE_LIMIT__STORAGE_TIMEOUT_SECONDS="0.2",
        PCF_GRAPHQL__PERSISTED_QUERIES_REDIS_URL=url,
        PCF_GRAPHQL__PERSISTED_QUERIES_REDIS_TIMEOUT_SECONDS="0.2",
        **env,
    )


async def _mutate(http: httpx.AsyncClient) -> str:
    variables = {"i": {"title": "t", "content": "c", "author": "alice"}}
    response = await http.post(
        "/graphql",
        json={"query": CREATE, "variables": variables},
        headers={"X-Demo-User": "alice"},
    )
    errors = response.json().get("errors")
    return "ok" if not errors else str(errors[0]["extensions"]["code"])


async def test_with_a_refusing_redis_budgets_hold_and_readiness_names_it(tmp_path: Path) -> None:
    settings = _limits_and_documents_in(
        refusing_url(), tmp_path, PCF_RATE_LIMIT__MUTATIONS="100/minute"
    )
    async with running(build_service(settings)) as http:
        outcomes = [await _mutate(http) for _ in range(150)]
        readiness = (await http.get("/health/ready")).json()
        metrics = (await http.get("/metrics")).text

    assert outcomes.count("ok") == 100
    assert outcomes.count("RATE_LIMITED") == 50
    assert readiness["status"] == "degraded"
    assert readiness["services"]["rate_limit_redis"]["status"] == "down"
    assert readiness["services"]["persisted_queries_redis"]["status"] == "down"
    assert "rate_limit_storage_fallback 1.0" in metrics
    assert "rate_limit_fallback_decisions_total 150.0" in metrics


async def test_with_a_hanging_redis_a_request_waits_at_most_its_timeouts(tmp_path: Path) -> None:
    with silent_listener() as url:
        async with running(build_service(_limits_and_documents_in(url, tmp_path))) as http:
            timings = []
            for index in range(20):
                document = f"query Count{index} {{ notes {{ totalCount }} }}"
                hashed = {"persistedQuery": {"version": 1, "sha256Hash": _sha(document)}}
                began = time.monotonic()
                response = await http.post(
                    "/graphql",
                    json={"query": document, "extensions": hashed},
                    headers={"X-Demo-User": "alice"},
                )
                timings.append(time.monotonic() - began)
                assert response.json() == {"data": {"notes": {"totalCount": 0}}}
            readiness = (await http.get("/health/ready")).json()

    # The first requests wait for both timeouts (0.2 s each) until both breakers open; then
    # no request waits for Redis: fifteen of them together take less than three timeouts.
    assert max(timings) < 2 * 0.2 + 0.3
    assert sum(timings[5:]) < 3 * 0.2, [round(t, 3) for t in timings]
    assert readiness["status"] == "degraded"
    assert readiness["services"]["rate_limit_redis"]["failure"] in ("error", "timeout")


def _sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@pytest.mark.parametrize("outage", ["refusing", "hanging"])
async def test_an_events_redis_missing_at_start_is_named_once_per_back_off_step(
    tmp_path: Path, outage: str
) -> None:
    with silent_listener() as silent:
        url = refusing_url() if outage == "refusing" else silent
        settings = settings_for(
            f"sqlite+aiosqlite:///{tmp_path}/n.db",
            PCF_EVENTS__BACKEND="redis",
            PCF_EVENTS__REDIS_URL=url,
            PCF_EVENTS__REDIS_TIMEOUT_SECONDS="0.2",
            PCF_DATABASE__RETRY_INITIAL_SECONDS="0.1",
            PCF_DATABASE__RETRY_MAX_SECONDS="0.2",
        )
        service = build_service(settings)
        with capture_logs() as logs:
            async with service.app.router.lifespan_context(service.app):
                await asyncio.sleep(1.5)
                readiness = service.health.report()
            steps = logs.find("notes API start-up step failed; retrying")

    assert readiness["status"] == "starting"
    assert readiness["services"]["events_redis"]["status"] == "down"
    assert len(steps) >= 3
    expected = "ConnectionError" if outage == "refusing" else "TimeoutError"
    for step in steps:
        assert step["dependency"] == "events_redis"
        assert step["reason"].startswith(expected), step
        assert "exception" not in step
