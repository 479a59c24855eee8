"""The notes API through GraphQL over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from pcf_api.composition import Service

from .conftest import GraphQLClient

pytestmark = pytest.mark.anyio

NOTE_FIELDS = "id title content author createdAt updatedAt"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


async def test_create_read_update_delete_round_trip(client: GraphQLClient) -> None:
    created = await client.create(title="First", content="Hello", author="alice")
    assert re.match(r"^notes:[A-Z0-9]{26}$", created["id"])

    data = await client.data(f'{{ note(id: "{created["id"]}") {{ {NOTE_FIELDS} }} }}')
    note = data["note"]
    assert (note["title"], note["content"], note["author"]) == ("First", "Hello", "alice")
    assert ISO_UTC.match(note["createdAt"])

    updated = await client.data(
        'mutation($id: ID!) { updateNote(id: $id, input: {title: "Second"}) { title content } }',
        {"id": created["id"]},
    )
    assert updated["updateNote"] == {"title": "Second", "content": "Hello"}

    deleted = await client.data(f'mutation {{ deleteNote(id: "{created["id"]}") }}')
    assert deleted == {"deleteNote": True}
    assert (await client.data(f'{{ note(id: "{created["id"]}") {{ id }} }}')) == {"note": None}


async def test_notes_connection_pages_newest_first(client: GraphQLClient) -> None:
    ids = [(await client.create(title=f"n{i}"))["id"] for i in range(3)]
    data = await client.data(
        "{ notes(limit: 2, offset: 0) { totalCount edges { cursor node { id } }"
        " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"
    )
    connection = data["notes"]
    assert connection["totalCount"] == 3
    assert [edge["node"]["id"] for edge in connection["edges"]] == [ids[2], ids[1]]
    page_info = connection["pageInfo"]
    assert page_info["hasNextPage"] is True
    assert page_info["hasPreviousPage"] is False
    assert page_info["startCursor"] == connection["edges"][0]["cursor"]
    assert page_info["endCursor"] == connection["edges"][1]["cursor"]

    last = await client.data(
        "{ notes(limit: 2, offset: 2) { edges { node { id } } "
        "pageInfo { hasNextPage hasPreviousPage } } }"
    )
    assert [edge["node"]["id"] for edge in last["notes"]["edges"]] == [ids[0]]
    assert last["notes"]["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True}


async def test_notes_by_author_and_search(client: GraphQLClient) -> None:
    await client.create(title="Groceries", content="Milk", author="alice")
    work = await client.create(title="Work", content="grocery run", author="bob")
    await client.create(title="Private", content="grocery list", author="bob")
    await client.data(
        'mutation($id: ID!) { shareNote(id: $id, user: "alice", role: READER) }',
        {"id": work["id"]},
        user="bob",
    )

    by_author = await client.data(
        '{ notesByAuthor(author: "bob") { totalCount edges { node { title } } } }'
    )
    assert by_author["notesByAuthor"]["totalCount"] == 1  # bob's shared note, not his other
    found = await client.data('{ searchNotes(query: "GROCER") { title } }')
    assert sorted(note["title"] for note in found["searchNotes"]) == ["Groceries", "Work"]
    found_by_bob = await client.data('{ searchNotes(query: "GROCER") { title } }', user="bob")
    assert sorted(note["title"] for note in found_by_bob["searchNotes"]) == ["Private", "Work"]


@pytest.mark.parametrize(
    ("query", "field", "constraint"),
    [
        (
            'mutation { createNote(input: {title: "", content: "c", author: "alice"}) { id } }',
            "title",
            "length",
        ),
        (
            'mutation { createNote(input: {title: "a\\u0007b", content: "c", author: "alice"})'
            " { id } }",
            "title",
            "no_control_characters",
        ),
        (
            'mutation { createNote(input: {title: "%s", content: "c", author: "alice"}) { id } }'
            % ("x" * 201),
            "title",
            "length",
        ),
        (
            'mutation { createNote(input: {title: "t", content: "%s", author: "alice"}) { id } }'
            % ("x" * 10_001),
            "content",
            "length",
        ),
        (
            'mutation { createNote(input: {title: "t", content: "c", author: "not a user!"})'
            " { id } }",
            "author",
            "username",
        ),
        ("{ notes(limit: 0) { totalCount } }", "limit", "range"),
        ("{ notes(limit: 101) { totalCount } }", "limit", "range"),
        ("{ notes(offset: -1) { totalCount } }", "offset", "range"),
        ("{ notes(offset: 10001) { totalCount } }", "offset", "range"),
        ('{ note(id: "bad id") { id } }', "id", "format"),
        ('mutation { deleteNote(id: "Notes:x") }', "id", "format"),
    ],
)
async def test_invalid_input_names_the_field_and_the_constraint(
    client: GraphQLClient, query: str, field: str, constraint: str
) -> None:
    response = await client.post(query)
    body = response.json()
    (error,) = body["errors"]
    extensions = error["extensions"]
    assert extensions["code"] == "INVALID_INPUT"
    assert (extensions["field"], extensions["constraint"]) == (field, constraint)
    assert re.fullmatch(r"[0-9a-f]{32}", extensions["traceId"])
    assert extensions["traceId"] == response.headers["x-trace-id"]
    assert ISO_UTC.match(extensions["timestamp"])


async def test_unknown_ids_are_null_for_reads_and_not_found_for_writes(
    client: GraphQLClient,
) -> None:
    assert await client.data('{ note(id: "notes:01ARZ3NDEKTSV4RRFFQ69G5FAV") { id } }') == {
        "note": None
    }
    for mutation in (
        'mutation { deleteNote(id: "notes:01ARZ3NDEKTSV4RRFFQ69G5FAV") }',
        'mutation { updateNote(id: "notes:01ARZ3NDEKTSV4RRFFQ69G5FAV", input: {title: "x"})'
        " { id } }",
    ):
        body = (await client.post(mutation)).json()
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_health_field_reports_the_database(client: GraphQLClient) -> None:
    data = await client.data("{ health { status version services { name status critical } } }")
    assert data["health"]["status"] in ("healthy", "starting")
    assert {"name": "database", "status": "up", "critical": True} in data["health"][
        "services"
    ] or data["health"]["status"] == "starting"


async def test_many_notes_by_id_in_one_query_are_read_and_authorized_in_one_select_each(
    service: Service, client: GraphQLClient
) -> None:
    ids = [(await client.create(title=f"n{i}"))["id"] for i in range(5)]
    statements: list[str] = []
    assert service.notes is not None
    engines = service.notes.services.store.database.statement_engines

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    query = (
        "{ "
        + " ".join(f'n{i}: note(id: "{note_id}") {{ id }}' for i, note_id in enumerate(ids))
        + " }"
    )
    data = await client.data(query)
    for engine in engines:
        event.remove(engine, "before_cursor_execute", record)

    assert [data[f"n{i}"]["id"] for i in range(5)] == ids
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, selects  # the read decisions, then the notes
    assert "note_relationships" in selects[0]
    assert all(" IN " in select.upper() for select in selects)
