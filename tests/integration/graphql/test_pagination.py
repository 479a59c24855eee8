"""Cursor pagination (Relay connections) on ``notes`` and ``notesByAuthor``, end to end on SQLite
and PostgreSQL, with the local backend and SpiceDB: keyset pages that neither skip nor repeat a
note while others are created and deleted, exact pageInfo, every cursor error, and a Hypothesis
model of the list."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcf_api.composition import build_service
from pcf_api.graphql.validation import encode_cursor
from pcf_api.store.notes import Key
from pcf_api.text import unstorable
from support.databases import postgres_database
from support.spicedb_server import PRESHARED_KEY, SpiceDBServer

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

GENEROUS = {"PCF_RATE_LIMIT__MUTATIONS": "10000/minute", "PCF_RATE_LIMIT__QUERIES": "100000/minute"}
PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
FORWARD = (
    "query($n: Int, $c: String) { notes(first: $n, after: $c) {"
    f" edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }}"
)
BACKWARD = (
    "query($n: Int, $c: String) { notes(last: $n, before: $c) {"
    f" edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }}"
)


@pytest.fixture(params=["local", "spicedb"])
async def paging_client(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[GraphQLClient]:
    env = dict(GENEROUS)
    with SpiceDBServer() as spicedb:
        if request.param == "spicedb":
            env |= {
                "PCF_AUTHZ__BACKEND": "spicedb",
                "PCF_AUTHZ__SPICEDB_ENDPOINT": spicedb.url,
                "PCF_AUTHZ__SPICEDB_PRESHARED_KEY": PRESHARED_KEY,
            }
        async with running(build_service(settings_for(database_url, **env))) as http:
            yield GraphQLClient(http)


async def page(
    client: GraphQLClient, query: str, n: int | None, cursor: str | None, user: str = "alice"
) -> dict[str, Any]:
    data = await client.data(query, {"n": n, "c": cursor}, user=user)
    connection: dict[str, Any] = data["notes"]
    return connection


def ids(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


async def test_forward_pages_skip_and_repeat_nothing_while_notes_come_and_go(
    paging_client: GraphQLClient,
) -> None:
    client = paging_client
    original = [(await client.create(title=f"n{i}"))["id"] for i in range(26)]
    await client.create(title="bob's", author="bob")  # never listed for alice
    newest_first = original[::-1]
    seen: list[str] = []
    deleted: set[str] = set()
    cursor = None
    for round_ in range(20):
        connection = await page(client, FORWARD, 4, cursor)
        seen += ids(connection)
        info = connection["pageInfo"]
        assert info["hasPreviousPage"] is (cursor is not None)
        if not info["hasNextPage"]:
            break
        cursor = info["endCursor"]
        assert cursor == connection["edges"][-1]["cursor"]
        # Meanwhile: a new note (newer than every page so far: it belongs before them) and a
        # note further down the list is deleted.
        await client.create(title=f"new{round_}")
        victim = newest_first[min(len(seen) + 2 + round_, len(newest_first) - 1)]
        if victim not in deleted:
            await client.data("mutation($id: ID!) { deleteNote(id: $id) }", {"id": victim})
            deleted.add(victim)
    assert len(seen) == len(set(seen)), "a note was repeated"
    assert seen == [note for note in newest_first if note not in deleted or note in seen]
    assert set(newest_first) - deleted <= set(seen), "a note was skipped"
    assert connection["pageInfo"]["hasNextPage"] is False


async def test_backward_pages_from_the_oldest_end(paging_client: GraphQLClient) -> None:
    client = paging_client
    original = [(await client.create(title=f"n{i}"))["id"] for i in range(25)]
    seen: list[str] = []
    cursor = None
    for round_ in range(20):
        connection = await page(client, BACKWARD, 6, cursor)
        seen = ids(connection) + seen
        info = connection["pageInfo"]
        assert info["hasNextPage"] is (cursor is not None)
        if not info["hasPreviousPage"]:
            break
        cursor = info["startCursor"]
        await client.create(title=f"new{round_}")  # newer than everything: met at the end
        if round_ == 1:  # an older note, not yet seen, goes
            await client.data("mutation($id: ID!) { deleteNote(id: $id) }", {"id": original[-3]})
    assert len(seen) == len(set(seen)), "a note was repeated"
    expected = [note for note in original[::-1] if note != original[-3]]
    assert seen[-len(expected) :] == expected
    # Walking backward ends at the newest note: the ones created meanwhile are all there.
    everything = await client.data("{ notes(limit: 100) { edges { node { id } } } }")
    assert seen == ids(everything["notes"])


async def test_page_info_is_exact_at_both_ends(paging_client: GraphQLClient) -> None:
    client = paging_client
    notes = [(await client.create(title=f"n{i}"))["id"] for i in range(5)][::-1]

    first = await page(client, FORWARD, 5, None)
    assert ids(first) == notes
    assert first["pageInfo"]["hasNextPage"] is False  # exactly all: no next page
    assert first["pageInfo"]["hasPreviousPage"] is False

    head = await page(client, FORWARD, 2, None)
    rest = await page(client, FORWARD, 3, head["pageInfo"]["endCursor"])
    assert ids(rest) == notes[2:]
    assert (rest["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasPreviousPage"]) == (False, True)

    past = await page(client, FORWARD, 3, rest["pageInfo"]["endCursor"])
    assert past["edges"] == []
    assert past["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": None,
        "endCursor": None,
    }

    oldest = await page(client, BACKWARD, 2, None)
    assert ids(oldest) == notes[3:]
    assert (oldest["pageInfo"]["hasNextPage"], oldest["pageInfo"]["hasPreviousPage"]) == (
        False,
        True,
    )
    top = await page(client, BACKWARD, 3, oldest["pageInfo"]["startCursor"])
    assert ids(top) == notes[:3]
    assert (top["pageInfo"]["hasNextPage"], top["pageInfo"]["hasPreviousPage"]) == (True, False)

    nothing = await page(client, FORWARD, 0, None)
    assert nothing["edges"] == []
    assert nothing["pageInfo"]["hasNextPage"] is True

    # Cursors of both styles are the same: an offset page can be continued with after.
    offset = await client.data("{ notes(limit: 2, offset: 1) { edges { cursor } } }")
    continued = await page(client, FORWARD, 10, offset["notes"]["edges"][-1]["cursor"])
    assert ids(continued) == notes[3:]


async def test_total_count_and_notes_by_author_with_cursors(paging_client: GraphQLClient) -> None:
    client = paging_client
    for i in range(4):
        await client.create(title=f"b{i}", author="bob")
    await client.create(title="a", author="alice")
    query = (
        'query($c: String) { notesByAuthor(author: "bob", first: 3, after: $c) {'
        f" totalCount edges {{ node {{ title }} }} {PAGE_INFO} }} }}"
    )
    head = (await client.data(query, {"c": None}, user="bob"))["notesByAuthor"]
    assert [edge["node"]["title"] for edge in head["edges"]] == ["b3", "b2", "b1"]
    assert head["totalCount"] == 4
    tail = (await client.data(query, {"c": head["pageInfo"]["endCursor"]}, user="bob"))[
        "notesByAuthor"
    ]
    assert [edge["node"]["title"] for edge in tail["edges"]] == ["b0"]
    assert (tail["totalCount"], tail["pageInfo"]["hasNextPage"]) == (4, False)
    # alice may read none of bob's notes
    empty = (await client.data(query, {"c": None}, user="alice"))["notesByAuthor"]
    assert (empty["edges"], empty["totalCount"]) == ([], 0)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


VALID = encode_cursor(Key(datetime.fromisoformat("2026-12-06T09:00:00+00:00"), "notes:01AB"))


@pytest.mark.parametrize(
    ("arguments", "field", "constraint"),
    [
        ('after: "not a cursor!"', "after", "cursor"),
        ('before: ""', "before", "cursor"),
        (f'after: "{_b64("offset:3")}"', "after", "cursor"),  # the old offset cursors
        (f'after: "{_b64("pcf1:1796599755208235:users:01AB")}"', "after", "cursor"),  # other type
        (f'before: "{_b64("pcf2:1796599755208235:notes:01AB")}"', "before", "cursor"),  # version
        (f'after: "{_b64("pcf1:-5:notes:01AB")}"', "after", "cursor"),
        (f'after: "{_b64("pcf1:99999999999999999:notes:01AB")}"', "after", "cursor"),
        (f'after: "{VALID}="', "after", "cursor"),  # not the canonical spelling
        (f'after: "{"A" * 200}"', "after", "cursor"),
        (f'first: 2, after: "{VALID}", limit: 3', "limit", "pagination_style"),
        ("offset: 2, last: 3", "offset", "pagination_style"),
        ("first: 2, last: 3", "last", "exclusive"),
        ("first: -1", "first", "range"),
        ("first: 101", "first", "range"),
        ("last: -1", "last", "range"),
        ("last: 101", "last", "range"),
    ],
)
async def test_each_cursor_error_is_invalid_input_naming_the_field(
    client: GraphQLClient, arguments: str, field: str, constraint: str
) -> None:
    for query in (
        f"{{ notes({arguments}) {{ totalCount }} }}",
        f'{{ notesByAuthor(author: "alice", {arguments}) {{ totalCount }} }}',
    ):
        response = await client.post(query)
        body = response.json()
        (error,) = body["errors"]
        extensions = error["extensions"]
        assert extensions["code"] == "INVALID_INPUT", body
        assert (extensions["field"], extensions["constraint"]) == (field, constraint)


async def test_a_valid_cursor_for_a_note_that_never_existed_is_just_a_position(
    client: GraphQLClient,
) -> None:
    await client.create()
    connection = await page(client, FORWARD, 5, VALID)  # 2026-12-06 09:00, before this note
    assert connection["edges"] == []
    assert connection["pageInfo"]["hasPreviousPage"] is True


# Hypothesis: operations against a model, the caller's notes as a Python list, newest first.


class SyncClient:
    def __init__(self, portal: BlockingPortal, http: httpx.AsyncClient) -> None:
        self.portal = portal
        self.http = http

    def post(self, query: str, variables: dict[str, Any], user: str) -> httpx.Response:
        return self.portal.call(
            partial(
                self.http.post,
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Accept": "application/graphql-response+json", "X-Demo-User": user},
            )
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sync_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncClient]:
    with _database(request.param, tmp_path_factory) as url:
        service = build_service(settings_for(url, PCF_LOG__LEVEL="CRITICAL", **GENEROUS))
        app = service.app
        transport = httpx.ASGITransport(app=app)
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            deadline = time.monotonic() + 10
            while not service.ready and time.monotonic() < deadline:
                time.sleep(0.02)
            http = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10)
            yield SyncClient(portal, http)
            portal.call(http.aclose)


def _database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if kind == "postgresql":
        return postgres_database()
    path = Path(tmp_path_factory.mktemp("paging")) / "notes.db"
    return nullcontext(f"sqlite+aiosqlite:///{path}")


CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id createdAt } }"
DELETE = "mutation($id: ID!) { deleteNote(id: $id) }"
GARBAGE_CURSORS = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.builds(
        lambda micros, tail: _b64(f"pcf1:{micros}:{tail}"),
        st.integers(-(10**18), 10**18),
        st.text(max_size=20),
    ),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(1, 4)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.tuples(
            st.sampled_from(["forward", "backward"]),
            st.one_of(st.none(), st.integers(-2, 6), st.integers(98, 102)),
            st.one_of(st.none(), st.integers(0, 50), GARBAGE_CURSORS),
        ),
    ),
    min_size=1,
    max_size=8,
)


def _expected(
    model: list[tuple[Key, str]], direction: str, n: int, bound: Key | None
) -> tuple[list[str], bool, bool]:
    """The page, hasNextPage and hasPreviousPage the Relay spec gives over the model."""
    if direction == "forward":
        window = [note for note in model if bound is None or note[0] < bound]
        shown = window[:n]
        has_next = len(window) > n
        has_previous = bound is not None and any(note[0] >= bound for note in model)
    else:
        window = [note for note in model if bound is None or note[0] > bound]
        shown = window[max(len(window) - n, 0) :]
        has_previous = len(window) > n
        has_next = bound is not None and any(note[0] <= bound for note in model)
    return [note_id for _, note_id in shown], has_next, has_previous


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
@example(operations=[("forward", None, "\x00")])  # found by Hypothesis: NUL is refused early
def test_generated_cursors_and_sequences_follow_the_model(  # noqa: PLR0912 - one model step per kind
    sync_client: SyncClient, operations: list[tuple[Any, ...]]
) -> None:
    user = f"u{uuid.uuid4().hex[:12]}"  # a fresh caller: the list is exactly the model's
    model: list[tuple[Key, str]] = []  # newest first
    known: list[Key] = []  # every key seen, deleted notes' too
    for operation in operations:
        kind = operation[0]
        if kind == "create":
            for _ in range(operation[1]):
                variables = {"i": {"title": "t", "content": "c", "author": user}}
                body = sync_client.post(CREATE, variables, user).json()
                note = body["data"]["createNote"]
                key = Key(datetime.fromisoformat(note["createdAt"]), note["id"])
                model.insert(0, (key, note["id"]))
                known.append(key)
            continue
        if kind == "delete":
            if model:
                _, note_id = model.pop(operation[1] % len(model))
                assert sync_client.post(DELETE, {"id": note_id}, user).json()["data"]
            continue
        n, cursor_choice = operation[1], operation[2]
        bound: Key | None = None
        cursor: str | None = None
        if isinstance(cursor_choice, int):
            if known:
                bound = known[cursor_choice % len(known)]
                cursor = encode_cursor(bound)
        else:
            cursor = cursor_choice
        response = sync_client.post(
            BACKWARD if kind == "backward" else FORWARD, {"n": n, "c": cursor}, user
        )
        body = response.json()
        errors = body.get("errors") or []
        for error in errors:
            assert error["extensions"]["code"] == "INVALID_INPUT", error
        size_ok = n is None or 0 <= n <= 100
        storable = cursor is None or unstorable(cursor) is None
        # A size out of range, or a cursor no database could hold (a NUL), is refused before
        # anything runs: a request error, 400.
        assert response.status_code == (200 if size_ok and storable else 400), response.text
        cursor_ok = cursor is None or bound is not None
        if not (size_ok and cursor_ok):
            if cursor is not None and bound is None:
                # a generated string: refused, unless it happens to be a well-formed cursor
                if not errors:
                    continue
                assert errors[0]["extensions"]["field"] in {"before", "after", "first", "last"}
            else:
                assert errors, body
            continue
        assert not errors, body
        connection = body["data"]["notes"]
        expected, has_next, has_previous = _expected(model, kind, 10 if n is None else n, bound)
        assert ids(connection) == expected
        info = connection["pageInfo"]
        assert (info["hasNextPage"], info["hasPreviousPage"]) == (has_next, has_previous)
