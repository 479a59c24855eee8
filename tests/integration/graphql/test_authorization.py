"""Who may do what, end to end through GraphQL: the authorization matrix on both backends, the
decision cache seen from SpiceDB's side, the audit trail, and the per-client rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pcf_api.composition import build_service
from support.logs import capture_logs
from support.spicedb_server import PRESHARED_KEY, SpiceDBServer

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

OWNER, READER, WRITER, STRANGER = "alice", "rita", "wally", "sam"
NOTE = "query($id: ID!) { note(id: $id) { id } }"
LIST = "{ notes(limit: 100) { totalCount edges { node { id } } } }"
UPDATE = 'mutation($id: ID!) { updateNote(id: $id, input: {title: "changed"}) { title } }'
SHARE = 'mutation($id: ID!) { shareNote(id: $id, user: "zoe", role: READER) }'
DELETE = "mutation($id: ID!) { deleteNote(id: $id) }"


@pytest.fixture
def spicedb_server() -> Iterator[SpiceDBServer]:
    with SpiceDBServer() as server:
        yield server


def spicedb_env(server: SpiceDBServer) -> dict[str, str]:
    return {
        "PCF_AUTHZ__BACKEND": "spicedb",
        "PCF_AUTHZ__SPICEDB_ENDPOINT": server.url,
        "PCF_AUTHZ__SPICEDB_PRESHARED_KEY": PRESHARED_KEY,
    }


@pytest.fixture(params=["local", "spicedb"])
async def client(
    request: pytest.FixtureRequest, database_url: str, spicedb_server: SpiceDBServer
) -> AsyncIterator[GraphQLClient]:
    env = spicedb_env(spicedb_server) if request.param == "spicedb" else {}
    async with running(build_service(settings_for(database_url, **env))) as http:
        yield GraphQLClient(http)


async def outcome(client: GraphQLClient, query: str, note_id: str, user: str) -> str:
    """What ``user`` got: the error code, or ``ok`` / ``null`` / ``listed`` / ``unlisted``."""
    response = await client.post(query, {"id": note_id}, user=user)
    body = response.json()
    if body.get("errors"):
        return str(body["errors"][0]["extensions"]["code"])
    data = body["data"]
    if "notes" in data:
        ids = [edge["node"]["id"] for edge in data["notes"]["edges"]]
        assert data["notes"]["totalCount"] == len(ids)
        return "listed" if note_id in ids else "unlisted"
    (value,) = data.values()
    return "null" if value is None else "ok"


async def shared_note(client: GraphQLClient) -> str:
    note_id: str = (await client.create(author=OWNER))["id"]
    for user, role in ((READER, "READER"), (WRITER, "WRITER")):
        await client.data(
            f'mutation($id: ID!) {{ shareNote(id: $id, user: "{user}", role: {role}) }}',
            {"id": note_id},
            user=OWNER,
        )
    return note_id


EXPECTED = {
    #          read    list        update       share        delete
    OWNER: ["ok", "listed", "ok", "ok", "ok"],
    READER: ["ok", "listed", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN"],
    WRITER: ["ok", "listed", "ok", "FORBIDDEN", "FORBIDDEN"],
    STRANGER: ["null", "unlisted", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"],
}


async def test_the_authorization_matrix(client: GraphQLClient) -> None:
    note_id = await shared_note(client)
    seen: dict[str, list[str]] = {}
    # The owner last: its delete would end the other rows' note.
    for user in (READER, WRITER, STRANGER, OWNER):
        seen[user] = [
            await outcome(client, query, note_id, user)
            for query in (NOTE, LIST, UPDATE, SHARE, DELETE)
        ]
    assert seen == EXPECTED


async def test_unsharing_takes_access_back_and_never_the_owners(client: GraphQLClient) -> None:
    note_id = await shared_note(client)
    for user in (READER, OWNER):
        await client.data(
            f'mutation($id: ID!) {{ unshareNote(id: $id, user: "{user}") }}',
            {"id": note_id},
            user=OWNER,
        )
    assert await outcome(client, NOTE, note_id, READER) == "null"
    assert await outcome(client, NOTE, note_id, OWNER) == "ok"
    assert await outcome(client, NOTE, note_id, WRITER) == "ok"


async def test_a_note_is_created_only_by_its_author(client: GraphQLClient) -> None:
    response = await client.post(
        'mutation { createNote(input: {title: "t", content: "c", author: "bob"}) { id } }',
        user=OWNER,
    )
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["field"] == "author"
    assert (await client.data(LIST, user="bob"))["notes"]["totalCount"] == 0


async def test_a_deleted_notes_id_answers_like_any_unknown_id(client: GraphQLClient) -> None:
    note_id = await shared_note(client)
    await client.data(DELETE, {"id": note_id}, user=OWNER)
    for user in (OWNER, READER, STRANGER):
        assert await outcome(client, NOTE, note_id, user) == "null"
        assert await outcome(client, UPDATE, note_id, user) == "NOT_FOUND"


async def test_a_repeated_check_within_the_ttl_does_not_reach_spicedb(
    database_url: str, spicedb_server: SpiceDBServer
) -> None:
    service = build_service(settings_for(database_url, **spicedb_env(spicedb_server)))
    async with running(service) as http:
        client = GraphQLClient(http)
        note_id = await shared_note(client)
        before = spicedb_server.calls("/v1/permissions/checkbulk")
        assert await outcome(client, NOTE, note_id, READER) == "ok"
        assert spicedb_server.calls("/v1/permissions/checkbulk") == before + 1
        assert await outcome(client, NOTE, note_id, READER) == "ok"
        assert spicedb_server.calls("/v1/permissions/checkbulk") == before + 1
        # Sharing changes the note's relationships: its decisions are asked again.
        await client.data(SHARE, {"id": note_id}, user=OWNER)
        assert await outcome(client, NOTE, note_id, READER) == "ok"
        assert spicedb_server.calls("/v1/permissions/checkbulk") == before + 2


async def test_every_decision_is_audited_without_token_content(database_url: str) -> None:
    with capture_logs() as logs:
        async with running(build_service(settings_for(database_url))) as http:
            client = GraphQLClient(http)
            note_id = await shared_note(client)
            await outcome(client, NOTE, note_id, STRANGER)
            await outcome(client, UPDATE, note_id, READER)
    lines = logs.find("authorization decision", subject=STRANGER)
    assert [(line["resource"], line["action"], line["decision"]) for line in lines] == [
        (f"note:{note_id}", "read", "deny")
    ]
    assert lines[0]["backend"] == "local"
    assert lines[0]["from_cache"] is False
    assert lines[0]["module"] == "pcf_api.audit"
    reader = logs.find("authorization decision", subject=READER, action="update")
    assert [line["decision"] for line in reader] == ["deny"]


SEARCH = '{ searchNotes(query: "x") { id } }'


async def test_the_eleventh_search_in_a_minute_is_refused_with_retry_after(
    database_url: str,
) -> None:
    async with running(build_service(settings_for(database_url))) as http:
        client = GraphQLClient(http)
        statuses = [(await client.post(SEARCH)).status_code for _ in range(10)]
        refused = await client.post(SEARCH)
        other_client = await client.post(SEARCH, user="bob")
        plain_query = await client.post(LIST)
    assert statuses == [200] * 10
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    (error,) = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["budget"] == "search"
    assert other_client.status_code == 200  # budgets are per client
    assert plain_query.status_code == 200  # and per kind of request


async def test_aliases_spend_one_search_each(database_url: str) -> None:
    many = "{ " + " ".join(f'a{i}: searchNotes(query: "x") {{ id }}' for i in range(6)) + " }"
    async with running(build_service(settings_for(database_url))) as http:
        client = GraphQLClient(http)
        first = await client.post(many)
        second = await client.post(many)
    assert first.status_code == 200
    assert second.status_code == 429


async def test_mutations_have_their_own_budget(database_url: str) -> None:
    settings = settings_for(database_url, PCF_RATE_LIMIT__MUTATIONS="2/minute")
    async with running(build_service(settings)) as http:
        client = GraphQLClient(http)
        await client.create()
        await client.create()
        refused = await client.post(
            'mutation { createNote(input: {title: "t", content: "c", author: "alice"}) { id } }'
        )
        still: dict[str, Any] = (await client.post(LIST)).json()
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["budget"] == "mutation"
    assert still["data"]["notes"]["totalCount"] == 2


async def test_while_spicedb_is_away_cached_decisions_serve_and_uncached_ones_get_503(
    database_url: str, spicedb_server: SpiceDBServer
) -> None:
    service = build_service(settings_for(database_url, **spicedb_env(spicedb_server)))
    async with running(service) as http:
        client = GraphQLClient(http)
        known = await shared_note(client)
        unknown = await shared_note(client)
        assert await outcome(client, NOTE, known, READER) == "ok"  # now cached
        spicedb_server.stop()

        assert await outcome(client, NOTE, known, READER) == "ok"
        refused = await client.post(NOTE, {"id": unknown}, user=READER)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


async def test_user_ids_as_identity_providers_issue_them_can_own_and_share(
    client: GraphQLClient,
) -> None:
    owner, friend = "auth0|5f1c2d", "friend@example.com"
    note_id = (await client.create(author=owner))["id"]
    await client.data(
        f'mutation($id: ID!) {{ shareNote(id: $id, user: "{friend}", role: READER) }}',
        {"id": note_id},
        user=owner,
    )
    assert await outcome(client, NOTE, note_id, friend) == "ok"
