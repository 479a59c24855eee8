"""Client input is a client error: text the database cannot store and integer arguments out of
range are refused as INVALID_INPUT, naming the field and the constraint, before any SQL runs,
on SQLite and PostgreSQL alike (PostgreSQL's text type cannot hold NUL, and a NUL that reached
it came back as DATABASE_ERROR)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from pcf_api.composition import Service, build_service
from pcf_api.graphql.validation import RANGES
from support.databases import postgres_database
from support.servers import DEV_JSON, ServerFactory
from support.wsclient import SubscriptionClient

from .conftest import GraphQLClient, settings_for

CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"
NOTE_ID = "notes:01ARZ3NDEKTSV4RRFFQ69G5FAV"


@contextmanager
def statements(service: Service) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs, but the readiness check's ``SELECT 1``
    (it runs on its own schedule)."""
    sent: list[str] = []
    assert service.notes is not None
    engines = service.notes.services.store.database.statement_engines

    def record(*args: object) -> None:
        if str(args[2]).strip() != "SELECT 1":
            sent.append(str(args[2]))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    """The one error's extensions; the request must not have produced data."""
    (error,) = body["errors"]
    assert not body.get("data"), body
    extensions: dict[str, Any] = error["extensions"]
    extensions["message"] = error["message"]
    return extensions


NUL_CASES = [
    (CREATE, {"i": {"title": "t", "content": "a\x00b", "author": "alice"}}, "content"),
    (CREATE, {"i": {"title": "t\x00", "content": "c", "author": "alice"}}, "title"),
    (CREATE, {"i": {"title": "t", "content": "c", "author": "\x00alice"}}, "author"),
    (
        f'mutation($c: String!) {{ updateNote(id: "{NOTE_ID}", input: {{content: $c}}) {{ id }} }}',
        {"c": "x\x00"},
        "content",
    ),
    ("query($q: String!) { searchNotes(query: $q) { id } }", {"q": "milk\x00"}, "query"),
    ('{ searchNotes(query: "milk\\u0000") { id } }', None, "query"),
    ("query($a: String!) { notesByAuthor(author: $a) { totalCount } }", {"a": "b\x00"}, "author"),
    ("query($id: ID!) { note(id: $id) { id } }", {"id": NOTE_ID + "\x00"}, "id"),
    ("query($c: String) { notes(first: 2, after: $c) { totalCount } }", {"c": "\x00"}, "after"),
    (
        f'mutation($u: String!) {{ shareNote(id: "{NOTE_ID}", user: $u, role: READER) }}',
        {"u": "bob\x00"},
        "user",
    ),
    ('query($q: String = "a\\u0000") { searchNotes(query: $q) { id } }', None, "query"),
]


@pytest.mark.parametrize(("query", "variables", "field"), NUL_CASES)
@pytest.mark.anyio
async def test_a_nul_character_in_any_string_argument_is_invalid_input_before_any_query(
    service: Service, client: GraphQLClient, query: str, variables: Any, field: str
) -> None:
    with statements(service) as sent:
        response = await client.post(query, variables)

    refused = refusal(response.json())
    assert response.status_code == 400
    assert refused["code"] == "INVALID_INPUT"
    assert (refused["field"], refused["constraint"]) == (field, "no_nul")
    assert refused["message"] == f"{field} must not contain the NUL character (U+0000)."
    assert sent == []


LIMIT = "query($n: Int) { notes(limit: $n) { totalCount } }"


@pytest.mark.parametrize(
    ("query", "variables", "field"),
    [
        (LIMIT, {"n": 1e20}, "limit"),
        (LIMIT, {"n": 2**63}, "limit"),
        (LIMIT, {"n": 2**31}, "limit"),
        (LIMIT, {"n": 2**31 - 1}, "limit"),
        (LIMIT, {"n": 5000}, "limit"),
        (LIMIT, {"n": -(2**40)}, "limit"),
        ("query($n: Int) { notes(offset: $n) { totalCount } }", {"n": 1e15}, "offset"),
        ("query($n: Int) { notes(first: $n) { totalCount } }", {"n": 2**31}, "first"),
        ("query($n: Int) { notes(last: $n) { totalCount } }", {"n": 2**62}, "last"),
        ('query($n: Int!) { searchNotes(query: "x", limit: $n) { id } }', {"n": 2**31}, "limit"),
        (
            'query($n: Int = 100000) { notesByAuthor(author: "bob", limit: $n) { totalCount } }',
            None,
            "limit",
        ),
        ("{ notes(limit: 5000) { edges { node { content } } } }", None, "limit"),
    ],
)
@pytest.mark.anyio
async def test_an_integer_argument_out_of_range_is_invalid_input_naming_the_range(
    service: Service, client: GraphQLClient, query: str, variables: Any, field: str
) -> None:
    with statements(service) as sent:
        response = await client.post(query, variables)

    refused = refusal(response.json())
    low, high = RANGES[field]
    assert response.status_code == 400
    assert refused["code"] == "INVALID_INPUT"  # never QUERY_TOO_COMPLEX nor INTERNAL_ERROR
    assert (refused["field"], refused["constraint"]) == (field, "range")
    assert re.fullmatch(
        rf"{field} must be between {low} and {high}, not -?\d+\.", refused["message"]
    )
    assert sent == []


@pytest.mark.parametrize("digits", ["9223372036854775808", "1" * 5000])
@pytest.mark.anyio
async def test_a_huge_literal_is_invalid_input_too(client: GraphQLClient, digits: str) -> None:
    """Validation refuses it (a 5000-digit one even makes ``int()`` raise, in the Int scalar)."""
    response = await client.post(f"{{ notes(limit: {digits}) {{ totalCount }} }}")

    assert response.status_code == 400
    assert refusal(response.json())["code"] == "INVALID_INPUT"


@pytest.mark.anyio
async def test_text_postgresql_cannot_store_is_refused_on_a_websocket_too(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """A socket's JSON may carry lone surrogates (an HTTP body's may not: it is refused as
    invalid JSON); they are refused like NUL, before any query."""
    with postgres_database() as url:
        server = server_factory({**DEV_JSON, "PCF_DATABASE__URL": url})
        server.wait_until_ready()
        ws_url = f"ws://127.0.0.1:{server.port}/graphql"
        async with SubscriptionClient(ws_url) as socket:
            for number, (text, constraint) in enumerate(
                [("a\ud800b", "valid_unicode"), ("a\x00b", "no_nul")]
            ):
                variables = {"i": {"title": "t", "content": text, "author": "alice"}}
                await socket.subscribe(str(number), CREATE, variables)
                message = await socket.receive()
                assert message["type"] == "error", message
                (error,) = message["payload"]
                extensions = error["extensions"]
                assert extensions["code"] == "INVALID_INPUT", error
                assert (extensions["field"], extensions["constraint"]) == ("content", constraint)


# --- Generated input, on SQLite and PostgreSQL --------------------------------------------------


class Client:
    """Synchronous calls into the app running on an event loop in another thread, so that
    Hypothesis (which drives synchronous tests) can exercise the real ASGI stack."""

    def __init__(self, portal: BlockingPortal, http: httpx.AsyncClient, service: Service) -> None:
        self.portal = portal
        self.http = http
        self.service = service

    def post(self, query: str, variables: dict[str, Any] | None) -> tuple[int, Any, list[str]]:
        """Status, body, and the SQL statements the request sent."""
        payload = {"query": query, "variables": variables or {}}
        headers = {"Accept": "application/graphql-response+json", "X-Demo-User": "alice"}
        with statements(self.service) as sent:
            response = self.portal.call(
                partial(self.http.post, "/graphql", json=payload, headers=headers)
            )
        return response.status_code, response.json(), sent


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    with _database(request.param, tmp_path_factory) as url:
        service = build_service(settings_for(url, PCF_LOG__LEVEL="CRITICAL"))
        app = service.app
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            deadline = time.monotonic() + 10
            while not service.ready and time.monotonic() < deadline:
                time.sleep(0.02)
            transport = httpx.ASGITransport(app=app)
            http = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10)
            yield Client(portal, http, service)
            portal.call(http.aclose)


@contextmanager
def _database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('inputs')}/notes.db"
    else:
        with postgres_database() as url:
            yield url


# Where a generated string goes: (document, the variables given the string, the field named).
STRING_TARGETS = [
    (CREATE, lambda text: {"i": {"title": text, "content": "c", "author": "alice"}}, "title"),
    (CREATE, lambda text: {"i": {"title": "t", "content": text, "author": "alice"}}, "content"),
    (CREATE, lambda text: {"i": {"title": "t", "content": "c", "author": text}}, "author"),
    (
        f'mutation($t: String) {{ updateNote(id: "{NOTE_ID}", input: {{title: $t}}) {{ id }} }}',
        lambda text: {"t": text},
        "title",
    ),
    ("query($q: String!) { searchNotes(query: $q) { id } }", lambda text: {"q": text}, "query"),
    (
        "query($a: String!) { notesByAuthor(author: $a) { totalCount } }",
        lambda text: {"a": text},
        "author",
    ),
    ("query($id: ID!) { note(id: $id) { id } }", lambda text: {"id": text}, "id"),
    ("mutation($id: ID!) { deleteNote(id: $id) }", lambda text: {"id": text}, "id"),
    (
        "query($c: String) { notes(last: 2, before: $c) { totalCount } }",
        lambda text: {"c": text},
        "before",
    ),
    (
        f'mutation($u: String!) {{ unshareNote(id: "{NOTE_ID}", user: $u) }}',
        lambda text: {"u": text},
        "user",
    ),
]
WITH_NUL = st.tuples(st.text(max_size=30), st.text(max_size=30)).map("\x00".join)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from(STRING_TARGETS),
    text=WITH_NUL,
    as_literal=st.booleans(),
)
def test_generated_strings_with_nul_are_invalid_input_before_any_query(
    generated: Client, target: Any, text: str, as_literal: bool
) -> None:
    query, variables_for, field = target
    variables = variables_for(text)
    if as_literal:  # the same value written into the document
        query, variables = _inlined(query, variables)

    status, body, sent = generated.post(query, variables)

    (error,) = body["errors"]
    assert (status, error["extensions"]["code"]) == (400, "INVALID_INPUT"), body
    assert (error["extensions"]["field"], error["extensions"]["constraint"]) == (field, "no_nul")
    assert sent == []


def _inlined(query: str, variables: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The document with each variable replaced by its value as a literal, and no variables."""
    header, _, body = query.partition(")")
    for name, value in variables.items():
        body = body.replace(f"${name}", _literal(value))
    return header.split("(", 1)[0] + body, {}


def _literal(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_literal(inner)}" for key, inner in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


# Integer arguments: (document with $n, the argument it feeds).
INTEGER_TARGETS = [
    (f"query($n: Int) {{ {field}({author}{argument}: $n) {{ totalCount }} }}", argument)
    for field, author in (("notes", ""), ("notesByAuthor", 'author: "bob", '))
    for argument in ("limit", "offset", "first", "last")
] + [('query($n: Int!) { searchNotes(query: "x", limit: $n) { id } }', "limit")]


@st.composite
def out_of_range(draw: st.DrawFn, argument: str) -> int | float:
    low, high = RANGES[argument]
    number = draw(
        st.one_of(
            st.integers(max_value=low - 1, min_value=-(2**70)),
            st.integers(min_value=high + 1, max_value=2**70),
            st.sampled_from([2**31 - 1, 2**31, 2**63, -(2**31) - 1, 10**20]),
        )
    )
    return float(number) if draw(st.booleans()) else number  # JSON numbers come as either


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), target=st.sampled_from(INTEGER_TARGETS))
def test_generated_integers_out_of_range_are_invalid_input_naming_the_range(
    generated: Client, data: st.DataObject, target: tuple[str, str]
) -> None:
    query, argument = target
    number = data.draw(out_of_range(argument))

    status, body, sent = generated.post(query, {"n": number})

    (error,) = body["errors"]
    low, high = RANGES[argument]
    assert (status, error["extensions"]["code"]) == (400, "INVALID_INPUT"), body
    assert (error["extensions"]["field"], error["extensions"]["constraint"]) == (argument, "range")
    assert f"between {low} and {high}" in error["message"]
    assert sent == []
