"""Generated documents, variables and bodies never produce a 500, a hang or a crash."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcf_api.composition import build_service

from .conftest import settings_for

FIELDS = [
    "note", "notes", "notesByAuthor", "searchNotes", "health", "edges", "node", "cursor", "id",
    "title", "content", "author", "createdAt", "totalCount", "pageInfo", "hasNextPage",
    "status", "services", "__typename", "__schema", "types", "name", "createNote", "updateNote",
    "deleteNote", "noteCreated", "bogus",
]  # fmt: skip
ARGUMENT_NAMES = ["id", "limit", "offset", "author", "query", "input", "title", "x"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
LITERALS = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(
        ["null", "true", "$v", "$limit", '"notes:01ARZ3NDEKTSV4RRFFQ69G5FAV"', '{title: "t"}']
    ),
)


@st.composite
def selection(draw: st.DrawFn, depth: int = 0) -> str:
    fields = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(FIELDS))
        alias = draw(st.sampled_from(["", "a: ", "b: "]))
        arguments = ""
        if draw(st.booleans()):
            pairs = draw(st.lists(st.tuples(st.sampled_from(ARGUMENT_NAMES), LITERALS), max_size=3))
            arguments = "(" + ", ".join(f"{key}: {value}" for key, value in pairs) + ")"
        sub = ""
        if depth < 4 and draw(st.booleans()):
            sub = " { " + draw(selection(depth + 1)) + " }"
        fields.append(f"{alias}{name}{arguments}{sub}")
    return " ".join(fields)


@st.composite
def documents(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=100))
    kind = draw(
        st.sampled_from(
            ["", "query ", "mutation ", "subscription ", "query Q($v: Int, $limit: Int) "]
        )
    )
    return kind + "{ " + draw(selection()) + " }"


class Client:
    """Synchronous calls into the app running on an event loop in another thread, so that
    Hypothesis (which drives synchronous tests) can exercise the real ASGI stack."""

    def __init__(self, portal: BlockingPortal, http: httpx.AsyncClient) -> None:
        self.portal = portal
        self.http = http

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.http.post, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.http.get, url, **kwargs))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    database = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    service = build_service(
        settings_for(f"sqlite+aiosqlite:///{database}", PCF_LOG__LEVEL="CRITICAL")
    )
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
        yield Client(portal, http)
        portal.call(http.aclose)


def _check(response_status: int, body: object, elapsed: float) -> None:
    assert response_status in {200, 400, 405, 413}, (response_status, body)
    assert elapsed < 5
    assert isinstance(body, dict)
    for error in body.get("errors", []) or []:
        assert error["extensions"]["code"] != "INTERNAL_ERROR", error


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=documents(),
    variables=st.dictionaries(st.sampled_from(["v", "limit", "x"]), JSON_VALUES, max_size=3),
)
def test_generated_documents_and_variables(
    client: Client, query: str, variables: dict[str, Any]
) -> None:
    started = time.monotonic()
    response = client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Accept": "application/graphql-response+json"},
    )
    _check(response.status_code, response.json(), time.monotonic() - started)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        JSON_VALUES.map(json.dumps), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    )
)
def test_generated_bodies(client: Client, body: str) -> None:
    started = time.monotonic()
    response = client.post(
        "/graphql",
        content=body.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
    )
    _check(response.status_code, response.json(), time.monotonic() - started)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=documents(), variables=st.text(max_size=40))
def test_generated_get_requests(client: Client, query: str, variables: str) -> None:
    started = time.monotonic()
    response = client.get("/graphql", params={"query": query, "variables": variables})
    _check(response.status_code, response.json(), time.monotonic() - started)
