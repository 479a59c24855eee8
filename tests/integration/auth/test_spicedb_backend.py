"""The SpiceDB backend against a local server speaking SpiceDB's HTTP API (spec: auth/spicedb.py
and, for the outage rule, auth/authorizer.py).

Outage behaviour (issue 4): with the server stopped, cached decisions keep working and uncached
ones are 503; after the stale window (shortened here through an injected clock) everything is
503; the circuit breaker opens after consecutive failures and closes when the server is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pcf_api.auth.authorizer import (
    AuthorizationUnavailable,
    Authorizer,
    AuthzHealth,
    DecisionCache,
)
from pcf_api.auth.policy import Action, BackendUnavailable, Resource, Role
from pcf_api.auth.spicedb import SpiceDBBackend, SpiceDBRequestError, escape_id
from pcf_api.health import HealthRegistry, Status
from pcf_api.resilience import BreakerState
from support.logs import capture_logs
from support.spicedb_server import PRESHARED_KEY, SCHEMA_PATH, SpiceDBServer

pytestmark = pytest.mark.anyio

NOTE_ID = "notes:01HZX3J5Q8A1B2C3D4E5F6G7H8"
NOTE = Resource.note(NOTE_ID)
CHECK, BULK = "/v1/permissions/check", "/v1/permissions/checkbulk"
WRITE, DELETE = "/v1/relationships/write", "/v1/relationships/delete"
TTL, WINDOW, RESET = 300.0, 300.0, 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def spicedb_authorizer(
    spicedb_server: SpiceDBServer, clock: Clock
) -> AsyncIterator[Authorizer]:
    backend = SpiceDBBackend(
        spicedb_server.url,
        PRESHARED_KEY,
        timeout=0.5,
        failure_threshold=3,
        reset_timeout=RESET,
        clock=clock,
    )
    cache = DecisionCache(ttl=TTL, maxsize=1000, stale_window=WINDOW, clock=clock)
    authorizer = Authorizer(backend, cache=cache, stale_window=WINDOW, clock=clock)
    yield authorizer
    await authorizer.aclose()


# --- The wire ---------------------------------------------------------------------------------


async def test_a_check_sends_spicedbs_check_permission_request(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.create(NOTE_ID, "olivia@example.com")
    spicedb_server.requests.clear()
    spicedb.fully_consistent = True

    assert await spicedb.check("olivia@example.com", NOTE, Action.SHARE)

    assert spicedb_server.bodies(CHECK) == [
        {
            "consistency": {"fullyConsistent": True},
            "resource": {"objectType": "note", "objectId": "notes=3A01HZX3J5Q8A1B2C3D4E5F6G7H8"},
            "permission": "share",
            "subject": {"object": {"objectType": "user", "objectId": "olivia=40example=2Ecom"}},
        }
    ]


async def test_create_touches_the_owner_relationship(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.create(NOTE_ID, "olivia")

    assert spicedb_server.bodies(WRITE) == [
        {
            "updates": [
                {
                    "operation": "OPERATION_TOUCH",
                    "relationship": {
                        "resource": {"objectType": "note", "objectId": escape_id(NOTE_ID)},
                        "relation": "owner",
                        "subject": {"object": {"objectType": "user", "objectId": "olivia"}},
                    },
                }
            ]
        }
    ]
    assert ("note", escape_id(NOTE_ID), "owner", "user", "olivia") in spicedb_server.relationships


async def test_share_writes_the_role_and_removes_the_other_one_atomically(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.share(NOTE_ID, "rita", Role.WRITER)

    (body,) = spicedb_server.bodies(WRITE)
    assert [(u["operation"], u["relationship"]["relation"]) for u in body["updates"]] == [
        ("OPERATION_TOUCH", "writer"),
        ("OPERATION_DELETE", "reader"),
    ]


async def test_unshare_and_delete_use_delete_relationships_filters(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.unshare(NOTE_ID, "rita")
    await spicedb.delete(NOTE_ID)

    note = escape_id(NOTE_ID)
    assert spicedb_server.bodies(DELETE) == [
        {
            "relationshipFilter": {
                "resourceType": "note",
                "optionalResourceId": note,
                "optionalRelation": relation,
                "optionalSubjectFilter": {"subjectType": "user", "optionalSubjectId": "rita"},
            }
        }
        for relation in ("reader", "writer")
    ] + [{"relationshipFilter": {"resourceType": "note", "optionalResourceId": note}}]


async def test_lists_are_checked_in_bulk_in_chunks(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.share("notes:7", "rita", Role.READER)
    notes = [Resource.note(f"notes:{number}") for number in range(501)]

    allowed = await spicedb.filter("rita", Action.READ, notes)

    assert allowed == {Resource.note("notes:7")}
    assert [len(body["items"]) for body in spicedb_server.bodies(BULK)] == [500, 1]
    assert spicedb_server.calls(CHECK) == 0


async def test_checks_after_a_write_are_at_least_as_fresh_as_the_write(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    assert not await spicedb.check("rita", Resource.note("notes:other"), Action.READ)
    await spicedb.share(NOTE_ID, "rita", Role.READER)

    assert await spicedb.check("rita", NOTE, Action.READ)
    assert await spicedb.filter("rita", Action.READ, [NOTE]) == {NOTE}

    consistencies = [
        body["consistency"] for path, body in spicedb_server.requests if path in (CHECK, BULK)
    ]
    assert consistencies == [
        {"minimizeLatency": True},
        {"atLeastAsFresh": {"token": str(spicedb_server.revision)}},
        {"atLeastAsFresh": {"token": str(spicedb_server.revision)}},
    ]


async def test_the_health_probe_reads_the_schema(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    await spicedb.ping()

    assert spicedb_server.calls("/v1/schema/read") == 1


# --- Refusals ---------------------------------------------------------------------------------


async def test_the_stand_in_refuses_requests_without_the_preshared_key_like_spicedb(
    spicedb_server: SpiceDBServer,
) -> None:
    async with httpx.AsyncClient(base_url=spicedb_server.url) as client:
        missing = await client.post("/v1/schema/read", json={})
        wrong = await client.post(
            "/v1/schema/read", json={}, headers={"Authorization": "Bearer wrong"}
        )

    assert (missing.status_code, missing.json()["code"]) == (401, 16)
    assert (wrong.status_code, wrong.json()) == (
        403,
        {"code": 7, "message": "invalid preshared key: invalid token", "details": []},
    )


async def test_a_refused_preshared_key_is_an_outage_and_logged_without_the_key(
    spicedb_server: SpiceDBServer,
) -> None:
    backend = SpiceDBBackend(spicedb_server.url, "wrong-key-value", timeout=1.0)
    try:
        with capture_logs() as logs, pytest.raises(BackendUnavailable):
            await backend.check("rita", NOTE, Action.READ)
    finally:
        await backend.aclose()

    assert logs.find("SpiceDB refused the pre-shared key", status=403)
    assert "wrong-key-value" not in logs.text()


async def test_a_request_spicedb_rejects_as_invalid_is_an_error_not_an_outage(
    spicedb_server: SpiceDBServer, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.zed"
    schema.write_text(SCHEMA_PATH.read_text().replace("permission share = owner", ""))
    without_share = SpiceDBServer(schema_path=schema)
    with without_share:
        backend = SpiceDBBackend(without_share.url, PRESHARED_KEY, failure_threshold=1)
        try:
            with pytest.raises(SpiceDBRequestError) as caught:
                await backend.check("rita", NOTE, Action.SHARE)
            # A bulk item SpiceDB cannot evaluate is denied, the others answered.
            assert await backend.filter("rita", Action.SHARE, [NOTE]) == set()
            assert backend.breaker.state is BreakerState.CLOSED
        finally:
            await backend.aclose()

    assert (caught.value.status, caught.value.code) == (400, 9)


async def test_error_answers_and_a_hanging_server_are_outages(
    spicedb: SpiceDBBackend, spicedb_server: SpiceDBServer
) -> None:
    spicedb_server.mode = "error"
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        await spicedb.check("rita", NOTE, Action.READ)

    spicedb_server.mode = "hang"
    spicedb_server.hang_seconds = 2.0
    with pytest.raises(BackendUnavailable, match="ReadTimeout"):
        await spicedb.check("rita", NOTE, Action.READ)

    spicedb_server.stop()
    with pytest.raises(BackendUnavailable, match="ConnectError"):
        await spicedb.ping()


# --- Caching and outages through the authorizer -----------------------------------------------


async def test_a_second_identical_check_within_the_ttl_does_not_reach_spicedb(
    spicedb_authorizer: Authorizer, spicedb_server: SpiceDBServer, clock: Clock
) -> None:
    await spicedb_authorizer.create(NOTE_ID, "olivia")

    first = await spicedb_authorizer.check("olivia", NOTE, Action.UPDATE)
    clock.now += TTL - 1
    second = await spicedb_authorizer.check("olivia", NOTE, Action.UPDATE)

    assert first.allowed
    assert second.allowed
    assert spicedb_server.calls(CHECK) == 1
    clock.now += 1
    await spicedb_authorizer.check("olivia", NOTE, Action.UPDATE)
    assert spicedb_server.calls(CHECK) == 2


async def test_with_spicedb_stopped_cached_decisions_work_and_uncached_ones_are_503(
    spicedb_authorizer: Authorizer, spicedb_server: SpiceDBServer, clock: Clock
) -> None:
    await spicedb_authorizer.create(NOTE_ID, "olivia")
    await spicedb_authorizer.check("olivia", NOTE, Action.READ)
    await spicedb_authorizer.check("sam", NOTE, Action.READ)
    clock.now += TTL + 1  # both decisions are stale now
    spicedb_server.stop()

    owner = await spicedb_authorizer.check("olivia", NOTE, Action.READ)
    stranger = await spicedb_authorizer.check("sam", NOTE, Action.READ)
    with pytest.raises(AuthorizationUnavailable):
        await spicedb_authorizer.check("olivia", NOTE, Action.DELETE)

    assert (owner.allowed, owner.from_cache, owner.stale) == (True, True, True)
    assert (stranger.allowed, stranger.from_cache) == (False, True)
    assert spicedb_authorizer.health_status() is AuthzHealth.DEGRADED

    clock.now += WINDOW
    with pytest.raises(AuthorizationUnavailable):
        await spicedb_authorizer.check("olivia", NOTE, Action.READ)
    assert spicedb_authorizer.health_status() is AuthzHealth.UNHEALTHY


async def test_the_breaker_opens_after_consecutive_failures_and_recovers_with_the_server(
    spicedb_authorizer: Authorizer, spicedb_server: SpiceDBServer, clock: Clock
) -> None:
    backend = spicedb_authorizer.backend
    assert isinstance(backend, SpiceDBBackend)

    def breaker_state() -> BreakerState:  # read afresh each time (mypy would narrow a property)
        return backend.breaker.state

    spicedb_server.mode = "error"
    for subject in ("a", "b", "c"):
        with pytest.raises(AuthorizationUnavailable):
            await spicedb_authorizer.check(subject, NOTE, Action.READ)
    assert breaker_state() is BreakerState.OPEN
    reached = spicedb_server.hits[CHECK]

    for subject in ("d", "e", "f"):
        with pytest.raises(AuthorizationUnavailable):
            await spicedb_authorizer.check(subject, NOTE, Action.READ)
    assert spicedb_server.hits[CHECK] == reached  # refused without reaching SpiceDB

    spicedb_server.mode = "ok"
    clock.now += RESET
    assert breaker_state() is BreakerState.HALF_OPEN
    decision = await spicedb_authorizer.check("d", NOTE, Action.READ)

    assert not decision.from_cache
    assert breaker_state() is BreakerState.CLOSED
    assert spicedb_authorizer.health_status() is AuthzHealth.HEALTHY


async def test_readiness_reports_degraded_then_unhealthy_then_healthy_again(
    spicedb_authorizer: Authorizer, spicedb_server: SpiceDBServer, clock: Clock
) -> None:
    registry = HealthRegistry(version="test", clock=clock)
    spicedb_authorizer.register_health_checks(registry)
    registry.mark_started()
    await registry.check_all()
    assert registry.status() is Status.HEALTHY

    spicedb_server.stop()
    await registry.check_all()
    assert registry.status() is Status.DEGRADED

    clock.now += WINDOW
    await registry.check_all()
    assert registry.status() is Status.UNHEALTHY

    spicedb_server.start()
    clock.now += RESET  # the breaker lets the next probe through
    # The checks run side by side: the decisions check sees the recovery the backend probe
    # recorded from the next round on (one health interval later).
    await registry.check_all()
    await registry.check_all()
    assert registry.status() is Status.HEALTHY
