"""GraphQL over HTTP: methods, media types, status codes, limits and bad input."""

from __future__ import annotations

import json

import pytest

from .conftest import GraphQLClient

pytestmark = pytest.mark.anyio

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"


async def test_get_runs_queries(client: GraphQLClient) -> None:
    response = await client.http.get(
        "/graphql",
        params={"query": "{ notes { totalCount } }"},
        headers={"Accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert response.json() == {"data": {"notes": {"totalCount": 0}}}


async def test_get_with_variables_and_operation_name(client: GraphQLClient) -> None:
    response = await client.http.get(
        "/graphql",
        params={
            "query": "query A($l: Int) { notes(limit: $l) { totalCount } }"
            " query B { health { status } }",
            "variables": json.dumps({"l": 5}),
            "operationName": "A",
        },
    )
    assert response.json()["data"] == {"notes": {"totalCount": 0}}


async def test_mutation_over_get_is_405_and_allows_post(client: GraphQLClient) -> None:
    response = await client.http.get(
        "/graphql",
        params={"query": 'mutation { deleteNote(id: "notes:x") }'},
        headers={"Accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_other_methods_are_405(client: GraphQLClient) -> None:
    response = await client.http.put("/graphql", json={"query": "{ notes { totalCount } }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


async def test_the_legacy_media_type_is_used_unless_the_client_asks_for_the_new_one(
    client: GraphQLClient,
) -> None:
    response = await client.post("{ notes { totalCount } }", accept=JSON)
    assert response.headers["content-type"].startswith(JSON)
    invalid = await client.post("{ nope }", accept=JSON)
    assert invalid.status_code == 200
    assert invalid.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    modern = await client.post("{ nope }")
    assert modern.status_code == 400
    assert modern.headers["content-type"].startswith(GRAPHQL_RESPONSE)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", JSON),
        (b'[{"query": "{ notes { totalCount } }"}]', JSON),
        (b'"just a string"', JSON),
        (b'{"variables": {}}', JSON),
        (b'{"query": "{ notes { totalCount } }", "variables": [1]}', JSON),
        (b'{"query": "{ notes { totalCount } }", "operationName": 5}', JSON),
        (b"query=x", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_requests_are_400_invalid_input(
    client: GraphQLClient, body: bytes, content_type: str
) -> None:
    response = await client.http.post(
        "/graphql", content=body, headers={"Content-Type": content_type, "Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_wrong_variable_types_are_a_request_error(client: GraphQLClient) -> None:
    response = await client.post("query($l: Int) { notes(limit: $l) { totalCount } }", {"l": "ten"})
    assert response.status_code == 400
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_a_body_over_the_limit_is_413(client: GraphQLClient) -> None:
    big = "{ notes { totalCount } }" + " " * (2 * 1024 * 1024)
    response = await client.post(big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def _nested(depth: int) -> str:
    """A query whose deepest field is at ``depth`` (introspection types nest arbitrarily)."""
    inner = "name"
    for _ in range(depth - 3):
        inner = f"ofType {{ {inner} }}"
    return f"{{ __schema {{ types {{ {inner} }} }} }}"


async def test_depth_16_is_rejected_with_maximum_and_actual(client: GraphQLClient) -> None:
    allowed = await client.post(_nested(15))
    assert allowed.status_code == 200, allowed.json()
    response = await client.post(_nested(16))
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert (error["extensions"]["maximum"], error["extensions"]["actual"]) == (15, 16)


async def test_complexity_is_reported_and_1001_is_rejected(client: GraphQLClient) -> None:
    five = " ".join(
        f"a{i}: notes(limit: 100) {{ edges {{ node {{ content }} }} }}" for i in range(5)
    )
    at_limit = await client.post(f"{{ {five} }}")
    assert at_limit.status_code == 200, at_limit.json()
    assert at_limit.headers["x-query-complexity"] == "1000"
    over = await client.post(f'{{ {five} one: note(id: "notes:x") {{ id }} }}')
    assert over.status_code == 400
    extensions = over.json()["errors"][0]["extensions"]
    assert extensions["code"] == "QUERY_TOO_COMPLEX"
    assert (extensions["maximum"], extensions["actual"]) == (1000, 1001)


async def test_eleven_aliases_are_rejected(client: GraphQLClient) -> None:
    ten = " ".join(f"h{i}: health {{ status }}" for i in range(10))
    assert (await client.post(f"{{ {ten} }}")).status_code == 200
    response = await client.post(f"{{ {ten} h10: health {{ status }} }}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_ALIASES"


async def test_fragment_cycles_are_rejected(client: GraphQLClient) -> None:
    query = (
        "{ notes { ...A } } fragment A on NotesConnection { ...B }"
        " fragment B on NotesConnection { ...A }"
    )
    response = await client.post(query)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
