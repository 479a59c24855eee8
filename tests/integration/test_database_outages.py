"""The database goes away: at start-up, and in the middle of a stream of writes.

Each test runs its own PostgreSQL cluster, stopped and started at will.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from support.pgcluster import PrivateCluster
from support.servers import DEV_JSON

CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id title } }"


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    yield cluster
    cluster.destroy()


def test_start_up_waits_for_the_database_with_growing_backoff_then_becomes_ready(
    server_factory: Any, cluster: PrivateCluster
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": cluster.url,
            "PCF_DATABASE__RETRY_INITIAL_SECONDS": "0.2",
            "PCF_DATABASE__RETRY_MAX_SECONDS": "1.6",
        }
    )
    server.wait_until_serving()
    time.sleep(5)
    ready = httpx.get(f"{server.url}/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (503, "starting")

    cluster.start()
    started = time.monotonic()
    server.wait_until_ready(timeout=10)
    became_ready_after = time.monotonic() - started
    assert became_ready_after < 3

    delays = [
        line["retry_in_seconds"]
        for line in server.log_lines()
        if line["message"] == "database not reachable; retrying"
    ]
    assert len(delays) >= 5, delays
    assert delays[:4] == sorted(delays[:4])  # 0.2, 0.4, 0.8, 1.6 each ±20 %: strictly growing
    assert delays[0] < 0.25
    assert max(delays) <= 1.6
    assert sum(1 for delay in delays if delay >= 1.28) >= 2  # reached the cap and stayed there


@dataclass
class Outcomes:
    acknowledged: dict[str, str] = field(default_factory=dict)  # title -> id
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # title -> (status, code)
    other: list[tuple[str, int, str]] = field(default_factory=list)
    readiness: list[tuple[float, int]] = field(default_factory=list)


def _stream_creates(url: str, until: float, outcomes: Outcomes, worker: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        sequence = 0
        while time.monotonic() < until:
            sequence += 1
            title = f"w{worker}-{sequence}"
            variables = {"i": {"title": title, "content": "c", "author": "alice"}}
            response = client.post("/graphql", json={"query": CREATE, "variables": variables})
            body = response.json()
            if response.status_code == 200 and body.get("data") and body["data"]["createNote"]:
                outcomes.acknowledged[title] = body["data"]["createNote"]["id"]
                continue
            errors = body.get("errors") or [
                {"extensions": {"code": body.get("error", {}).get("code")}}
            ]
            code = errors[0]["extensions"]["code"]
            if code == "SERVICE_UNAVAILABLE":
                outcomes.refused[title] = (response.status_code, code)
                if response.status_code == 503:
                    assert response.headers.get("retry-after"), "503 without Retry-After"
            else:
                outcomes.other.append((title, response.status_code, code))
            time.sleep(0.1)


def _watch_readiness(url: str, until: float, outcomes: Outcomes) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        status = httpx.get(f"{url}/health/ready", timeout=5).status_code
        outcomes.readiness.append((time.monotonic() - started, status))
        time.sleep(0.25)


def test_acknowledged_writes_survive_a_database_outage_and_the_rest_are_refused_loudly(
    server_factory: Any, cluster: PrivateCluster
) -> None:
    cluster.start()
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": cluster.url,
            "PCF_DATABASE__WRITE_WAIT_SECONDS": "3",
            "PCF_DATABASE__UNAVAILABLE_AFTER_SECONDS": "5",
            "PCF_HEALTH__CHECK_INTERVAL_SECONDS": "0.5",
            "PCF_HEALTH__CHECK_TIMEOUT_SECONDS": "1",
            # The client streams creates faster than the default 100 mutations a minute.
            "PCF_RATE_LIMIT__ENABLED": "false",
        }
    )
    server.wait_until_ready()
    outcomes = Outcomes()
    until = time.monotonic() + 22
    threads = [
        threading.Thread(target=_stream_creates, args=(server.url, until, outcomes, worker))
        for worker in range(3)
    ]
    threads.append(threading.Thread(target=_watch_readiness, args=(server.url, until, outcomes)))
    for thread in threads:
        thread.start()
    time.sleep(3)
    cluster.stop()
    time.sleep(10)
    cluster.start()
    for thread in threads:
        thread.join(timeout=60)

    refused_statuses = [status for status, _ in outcomes.refused.values()]
    print(
        f"acknowledged {len(outcomes.acknowledged)}, refused after waiting "
        f"{refused_statuses.count(200)}, refused with 503 {refused_statuses.count(503)}"
    )
    assert server.process.poll() is None, "the server died"
    assert outcomes.other == [], "creates that failed with something other than SERVICE_UNAVAILABLE"
    assert len(outcomes.acknowledged) > 20
    assert any(status == 503 for status, _ in outcomes.refused.values()), (
        "no 503 past the threshold"
    )
    assert any(status == 200 for status, _ in outcomes.refused.values()), "no refused write-wait"

    with psycopg.connect(cluster.dsn) as connection:
        stored: dict[str, str] = dict(connection.execute("SELECT title, id FROM notes").fetchall())
    missing = {title for title in outcomes.acknowledged if title not in stored}
    assert missing == set(), "acknowledged creates lost"
    assert all(stored[title] == note_id for title, note_id in outcomes.acknowledged.items())
    assert len(stored) == len(set(stored.values()))

    statuses = [status for _, status in outcomes.readiness]
    assert 503 in statuses, "readiness never went unhealthy"
    first_down = statuses.index(503)
    assert 200 in statuses[first_down:], "readiness never recovered"
    assert statuses[-1] == 200


def test_while_the_database_is_down_recently_read_notes_are_served_from_cache_and_flagged(
    server_factory: Any, cluster: PrivateCluster
) -> None:
    cluster.start()
    server = server_factory({**DEV_JSON, "PCF_DATABASE__URL": cluster.url})
    server.wait_until_ready()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        variables = {"i": {"title": "kept", "content": "c", "author": "alice"}}
        created = client.post("/graphql", json={"query": CREATE, "variables": variables}).json()
        note_id = created["data"]["createNote"]["id"]
        read = {
            "query": "query($id: ID!) { note(id: $id) { id title } }",
            "variables": {"id": note_id},
        }
        assert "extensions" not in client.post("/graphql", json=read).json()

        cluster.stop()
        during = client.post("/graphql", json=read).json()
        assert during["data"] == {"note": {"id": note_id, "title": "kept"}}
        assert during["extensions"] == {"servedFromCache": True}
        listing = client.post("/graphql", json={"query": "{ notes { totalCount } }"}).json()
        assert listing["errors"][0]["extensions"]["code"] == "DATABASE_ERROR"

        cluster.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = client.post("/graphql", json=read).json()
            if "extensions" not in after:
                break
            time.sleep(0.2)
        assert after == {"data": {"note": {"id": note_id, "title": "kept"}}}
