"""Persisted documents: automatic persisted queries (Apollo's ``extensions.persistedQuery``) and
trusted documents, on the real app in process (and a real server for the WebSocket)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisError

from pcf_api.composition import Service, build_service
from pcf_api.graphql.persisted import (
    ManifestError,
    MemoryDocumentStore,
    RedisDocumentStore,
    registered_bytes,
    sha256_hex,
)
from pcf_api.health import Status
from pcf_api.resilience import BreakerState
from pcf_api.sizing import LRU_ENTRY_BYTES
from support.redis import private_redis, silent_listener
from support.servers import DEV_JSON, ServerFactory
from support.wsclient import TRANSPORT_WS, SubscriptionClient

from .conftest import running, settings_for

pytestmark = pytest.mark.anyio

GRAPHQL_RESPONSE = "application/graphql-response+json"
HEADERS = {"Accept": GRAPHQL_RESPONSE, "X-Demo-User": "alice"}
QUERY = "query Count { notes { totalCount } }"
TRUSTED = "query Trusted { health { status } }"
CREATE = "mutation Create($i: CreateNoteInput!) { createNote(input: $i) { id } }"
REDIS_URL = "redis://127.0.0.1:6379/0"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha(document)}}


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/notes.db"


async def post(http: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await http.post("/graphql", json=payload, headers=HEADERS)


async def get(http: httpx.AsyncClient, **params: Any) -> httpx.Response:
    sent = {
        key: json.dumps(value) if isinstance(value, dict) else value
        for key, value in params.items()
    }
    return await http.get("/graphql", params=sent, headers=HEADERS)


@pytest.fixture
async def http(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_service(settings_for(sqlite_url))) as client:
        yield client


# Automatic persisted queries


async def test_an_unknown_hash_is_not_found_then_registered_then_a_hit(
    http: httpx.AsyncClient,
) -> None:
    miss = await post(http, {"extensions": persisted(QUERY)})
    assert miss.status_code == 404  # Apollo's link reads the code and resends the document
    assert miss.headers["cache-control"] == "no-store"
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    assert codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert "data" not in miss.json()

    registered = await post(http, {"query": QUERY, "extensions": persisted(QUERY)})
    assert registered.status_code == 200
    assert registered.json() == {"data": {"notes": {"totalCount": 0}}}

    hit = await post(http, {"extensions": persisted(QUERY), "operationName": "Count"})
    assert hit.status_code == 200
    assert hit.json() == {"data": {"notes": {"totalCount": 0}}}

    metrics = (await http.get("/metrics")).text
    assert 'graphql_persisted_queries_total{outcome="hit"} 1.0' in metrics
    assert 'graphql_persisted_queries_total{outcome="miss"} 1.0' in metrics
    assert 'graphql_persisted_queries_total{outcome="registered"} 1.0' in metrics


async def test_a_hash_that_is_not_its_documents_is_invalid_input(http: httpx.AsyncClient) -> None:
    response = await post(http, {"query": QUERY, "extensions": persisted("{ other }")})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == "extensions.persistedQuery.sha256Hash"
    # Nothing was registered under the wrong hash.
    again = await post(http, {"extensions": persisted("{ other }")})
    assert codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    ("extension", "field"),
    [
        ({"version": 2, "sha256Hash": sha(QUERY)}, "extensions.persistedQuery.version"),
        ({"sha256Hash": sha(QUERY)}, "extensions.persistedQuery.version"),
        ({"version": 1, "sha256Hash": "abc"}, "extensions.persistedQuery.sha256Hash"),
        ({"version": 1, "sha256Hash": 12}, "extensions.persistedQuery.sha256Hash"),
        ("v1", "extensions.persistedQuery"),
    ],
)
async def test_a_malformed_persisted_query_is_invalid_input(
    http: httpx.AsyncClient, extension: Any, field: str
) -> None:
    response = await post(http, {"query": QUERY, "extensions": {"persistedQuery": extension}})
    assert response.status_code == 400
    assert codes(response.json()) == ["INVALID_INPUT"]
    assert response.json()["errors"][0]["extensions"]["field"] == field


async def test_get_with_only_the_hash_runs_a_registered_query(http: httpx.AsyncClient) -> None:
    miss = await get(http, extensions=persisted(QUERY))
    assert codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert miss.headers["cache-control"] == "no-store"
    await post(http, {"query": QUERY, "extensions": persisted(QUERY)})

    hit = await get(http, extensions=persisted(QUERY))
    assert hit.status_code == 200
    assert hit.json() == {"data": {"notes": {"totalCount": 0}}}
    assert "cache-control" not in hit.headers


async def test_a_registered_mutation_is_still_refused_over_get(http: httpx.AsyncClient) -> None:
    variables = {"i": {"title": "t", "content": "c", "author": "alice"}}
    created = await post(
        http, {"query": CREATE, "variables": variables, "extensions": persisted(CREATE)}
    )
    assert "errors" not in created.json(), created.json()

    response = await get(http, extensions=persisted(CREATE), variables=variables)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert codes(response.json()) == ["METHOD_NOT_ALLOWED"]


async def test_the_store_holds_a_bounded_number_of_bytes(sqlite_url: str) -> None:
    first = "query A { notes { totalCount } }"
    second = "query B { notes { totalCount } }"
    room_for_one = registered_bytes(sha256_hex(first), first) + LRU_ENTRY_BYTES + 10
    service = build_service(
        settings_for(sqlite_url, PCF_GRAPHQL__PERSISTED_QUERIES_MAX_BYTES=str(room_for_one))
    )
    async with running(service) as http:
        await post(http, {"query": first, "extensions": persisted(first)})
        assert "errors" not in (await post(http, {"extensions": persisted(first)})).json()
        await post(http, {"query": second, "extensions": persisted(second)})
        # Both do not fit: the least recently used one is gone.
        assert codes((await post(http, {"extensions": persisted(first)})).json()) == [
            "PERSISTED_QUERY_NOT_FOUND"
        ]
        assert "errors" not in (await post(http, {"extensions": persisted(second)})).json()


async def test_with_persisted_queries_off_a_hash_alone_is_not_supported(sqlite_url: str) -> None:
    service = build_service(settings_for(sqlite_url, PCF_GRAPHQL__PERSISTED_QUERIES="false"))
    async with running(service) as http:
        response = await post(http, {"extensions": persisted(QUERY)})
        assert response.status_code == 400
        assert codes(response.json()) == ["PERSISTED_QUERY_NOT_SUPPORTED"]
        assert response.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        # With the document it simply executes (Apollo's link then stops sending hashes).
        full = await post(http, {"query": QUERY, "extensions": persisted(QUERY)})
        assert full.json() == {"data": {"notes": {"totalCount": 0}}}


async def test_a_request_without_query_or_hash_is_still_refused(http: httpx.AsyncClient) -> None:
    response = await post(http, {"extensions": {"other": 1}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["field"] == "query"


# Redis-backed store


async def test_replicas_share_registered_queries_through_redis(sqlite_url: str) -> None:
    document = f"query Shared{uuid.uuid4().hex[:8]} {{ notes {{ totalCount }} }}"
    env = {"PCF_GRAPHQL__PERSISTED_QUERIES_REDIS_URL": REDIS_URL}
    one = build_service(settings_for(sqlite_url, **env))
    two = build_service(settings_for(sqlite_url, **env))
    async with running(one) as first, running(two) as second:
        assert codes((await post(second, {"extensions": persisted(document)})).json()) == [
            "PERSISTED_QUERY_NOT_FOUND"
        ]
        await post(first, {"query": document, "extensions": persisted(document)})
        hit = await post(second, {"extensions": persisted(document)})
        assert hit.json() == {"data": {"notes": {"totalCount": 0}}}
    from redis.asyncio import Redis  # noqa: PLC0415

    redis = Redis.from_url(REDIS_URL)
    try:
        key = f"pcf:pq:{sha(document)}"
        assert 0 < await redis.ttl(key) <= 7 * 24 * 3600
        await redis.delete(key)
    finally:
        await redis.aclose()


async def test_with_redis_down_documents_still_execute(sqlite_url: str) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    env = {"PCF_GRAPHQL__PERSISTED_QUERIES_REDIS_URL": "redis://127.0.0.1:1/0"}
    async with running(build_service(settings_for(sqlite_url, **env))) as http:
        document = "query Down { notes { totalCount } }"
        with_document = await post(http, {"query": document, "extensions": persisted(document)})
        assert with_document.json() == {"data": {"notes": {"totalCount": 0}}}
        # Registered in process all the same: this replica still knows it.
        assert "errors" not in (await post(http, {"extensions": persisted(document)})).json()
        other = "query Unknown { notes { totalCount } }"
        miss = await post(http, {"extensions": persisted(other)})
        assert codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]  # the client resends it
        plain = await post(http, {"query": QUERY})
        assert plain.json() == {"data": {"notes": {"totalCount": 0}}}


async def test_a_hanging_redis_costs_a_lookup_its_timeout_until_the_breaker_opens() -> None:
    with silent_listener() as url:
        store = RedisDocumentStore.from_url(url, local=MemoryDocumentStore(10_000), timeout=0.2)
        loop = asyncio.get_running_loop()
        timings = []
        for index in range(8):
            began = loop.time()
            assert await store.get(sha(f"query Q{index} {{ health {{ status }} }}")) is None
            timings.append(loop.time() - began)
        with pytest.raises(RedisError):
            await store.check()
        await store.aclose()
    assert max(timings) < 0.2 + 0.2
    assert store.breaker.state is BreakerState.OPEN
    assert sum(timings[RedisDocumentStore.BREAKER_FAILURES :]) < 0.1


async def test_a_redis_stopped_mid_run_is_a_miss_then_shared_again(tmp_path: Path) -> None:
    documents = [f"query Mid{index} {{ health {{ status }} }}" for index in range(3)]
    with private_redis(tmp_path) as server:
        one, two = (
            RedisDocumentStore.from_url(server.url, local=MemoryDocumentStore(10_000))
            for _ in range(2)
        )
        await one.put(sha(documents[0]), documents[0])
        assert await two.get(sha(documents[0])) == documents[0]

        server.stop()
        await one.put(sha(documents[1]), documents[1])  # dropped, not an error
        assert await two.get(sha(documents[1])) is None  # a miss: the client resends it
        with pytest.raises(RedisError):
            await two.check()

        server.start()
        one.breaker.reset_timeout = two.breaker.reset_timeout = 0.05
        await asyncio.sleep(0.1)
        await one.put(sha(documents[2]), documents[2])
        assert await two.get(sha(documents[2])) == documents[2]
        await two.check()
        await one.aclose()
        await two.aclose()


# Trusted documents


def manifest(tmp_path: Path, documents: dict[str, str], name: str = "manifest.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(documents))
    return path


async def until_checked(service: Service) -> None:
    """Readiness says ``starting`` until every check has reported once, which can come after the
    notes API is ready on a loaded machine."""
    for _ in range(200):
        if service.health.status() is not Status.STARTING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"readiness still starting: {service.health.report()}")


def trusted_env(tmp_path: Path, *, only: bool = True) -> dict[str, str]:
    path = manifest(tmp_path, {sha(TRUSTED): TRUSTED})
    return {
        "PCF_GRAPHQL__TRUSTED_DOCUMENTS": str(path),
        "PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS": "true" if only else "false",
    }


async def test_only_trusted_documents_refuses_others_before_parsing(
    sqlite_url: str, tmp_path: Path
) -> None:
    service = build_service(settings_for(sqlite_url, **trusted_env(tmp_path)))
    async with running(service) as http:
        await until_checked(service)
        by_hash = await post(http, {"extensions": persisted(TRUSTED)})
        assert by_hash.json() == {"data": {"health": {"status": "healthy"}}}, by_hash.json()
        by_text = await post(http, {"query": TRUSTED})
        assert "errors" not in by_text.json()
        by_id = await post(http, {"documentId": f"sha256:{sha(TRUSTED)}"})
        assert "errors" not in by_id.json()
        relay = await get(http, doc_id=sha(TRUSTED))
        assert "errors" not in relay.json()

        for payload in (
            {"query": "{ this is not GraphQL"},  # unparsable: refused, not a syntax error
            {"query": QUERY},
            {"query": QUERY, "extensions": persisted(QUERY)},  # no registration either
            {"extensions": persisted(QUERY)},
            {"documentId": sha(QUERY)},
        ):
            refused = await post(http, payload)
            assert refused.status_code == 400, payload
            assert codes(refused.json()) == ["DOCUMENT_NOT_TRUSTED"], refused.json()
        metrics = (await http.get("/metrics")).text
        assert 'graphql_trusted_documents_total{outcome="refused"} 5.0' in metrics
        assert 'graphql_trusted_documents_total{outcome="hit"} 4.0' in metrics


async def test_a_manifest_without_only_trusted_adds_documents_by_hash(
    sqlite_url: str, tmp_path: Path
) -> None:
    service = build_service(settings_for(sqlite_url, **trusted_env(tmp_path, only=False)))
    async with running(service) as http:
        assert "errors" not in (await post(http, {"extensions": persisted(TRUSTED)})).json()
        assert "errors" not in (await post(http, {"query": QUERY})).json()


def test_a_bad_manifest_is_refused_at_start_up(sqlite_url: str, tmp_path: Path) -> None:
    path = manifest(tmp_path, {sha("{ other }"): TRUSTED})
    settings = settings_for(sqlite_url, PCF_GRAPHQL__TRUSTED_DOCUMENTS=str(path))
    with pytest.raises(ManifestError, match="is not the sha256 of its document"):
        build_service(settings)


def test_a_bad_manifest_stops_the_server(server_factory: ServerFactory, tmp_path: Path) -> None:
    path = manifest(tmp_path, {"not-a-hash": TRUSTED})
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_GRAPHQL__TRUSTED_DOCUMENTS": str(path),
        }
    )
    assert server.wait(timeout=30) != 0
    assert "the id is not a hex MD5, SHA-1 or SHA-256" in server.output()


async def test_only_trusted_documents_over_the_websocket(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    subscription = "subscription Created { noteCreated { id } }"
    path = manifest(tmp_path, {sha(subscription): subscription})
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_GRAPHQL__TRUSTED_DOCUMENTS": str(path),
            "PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS": "true",
        }
    )
    server.wait_until_ready()
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with SubscriptionClient(url, TRANSPORT_WS) as client:
        await client.subscribe("bad", "subscription { this is not GraphQL")
        refused = await client.receive()
        assert refused["type"] == "error", refused
        assert refused["id"] == "bad"
        assert [e["extensions"]["code"] for e in refused["payload"]] == ["DOCUMENT_NOT_TRUSTED"]

        await client.subscribe("named", "subscription Other { noteDeleted }")
        named = await client.receive()
        assert named["type"] == "error", named
        assert named["payload"][0]["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"

        await client.subscribe("ok", subscription)
        await asyncio.sleep(0.3)
        await client.stop("ok")


async def test_only_trusted_subscription_runs_over_the_websocket(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    subscription = "subscription Created { noteCreated { id } }"
    documents = {sha(subscription): subscription, sha(CREATE): CREATE}
    path = manifest(tmp_path, documents)
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_GRAPHQL__TRUSTED_DOCUMENTS": str(path),
            "PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS": "true",
        }
    )
    server.wait_until_ready()
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with SubscriptionClient(url, TRANSPORT_WS) as client:
        await client.subscribe("ok", subscription)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=server.url) as http:
            created = await http.post(
                "/graphql",
                json={
                    "extensions": persisted(CREATE),
                    "variables": {"i": {"title": "t", "content": "c", "author": "alice"}},
                },
            )
        note_id = created.json()["data"]["createNote"]["id"]
        operation, data = await client.next_data()
        assert (operation, data) == ("ok", {"noteCreated": {"id": note_id}})
        await client.stop("ok")
