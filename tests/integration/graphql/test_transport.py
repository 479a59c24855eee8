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


CREATE = 'mutation { createNote(input: {title: "csrf", content: "c", author: "alice"}) { id } }'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----x",
        None,  # no Content-Type at all
        "application/graphql",
        "application/jsonp",
    ],
)
@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_a_post_that_is_not_json_is_415_and_nothing_executes(
    client: GraphQLClient, content_type: str | None, accept: str
) -> None:
    # What a cross-site form or fetch() without preflight can send: a JSON-looking body with a
    # "simple" content type. It must not run (CSRF prevention, docs/api.md).
    headers = {"Accept": accept, "X-Demo-User": "alice"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = json.dumps({"query": CREATE}).encode()
    response = await client.http.post("/graphql", content=body, headers=headers)
    assert response.status_code == 415
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/json" in error["message"]
    assert response.headers["content-type"].startswith(accept)
    assert (await client.data("{ notes { totalCount } }"))["notes"]["totalCount"] == 0


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "Application/JSON", GRAPHQL_RESPONSE]
)
async def test_json_content_types_are_accepted(client: GraphQLClient, content_type: str) -> None:
    response = await client.http.post(
        "/graphql",
        content=json.dumps({"query": "{ notes { totalCount } }"}).encode(),
        headers={"Content-Type": content_type, "X-Demo-User": "alice"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"notes": {"totalCount": 0}}}


QUERY = "{ notes { totalCount } }"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": 5}, "query"),
        ({"query": ["{ notes { totalCount } }"]}, "query"),
        ({"query": {"text": QUERY}}, "query"),
        ({}, "query"),
        ({"query": "   "}, "query"),
        ({"query": QUERY, "variables": [1]}, "variables"),
        ({"query": QUERY, "variables": "not json"}, "variables"),
        ({"query": QUERY, "variables": "[1, 2]"}, "variables"),
        ({"query": QUERY, "variables": 3}, "variables"),
        ({"query": QUERY, "extensions": ["x"]}, "extensions"),
        ({"query": QUERY, "extensions": "{broken"}, "extensions"),
        ({"query": QUERY, "extensions": True}, "extensions"),
        ({"query": QUERY, "operationName": 5}, "operationName"),
        ({"query": QUERY, "operationName": ["A"]}, "operationName"),
        ({"query": QUERY, "operationName": {"name": "A"}}, "operationName"),
    ],
)
@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_a_request_parameter_of_the_wrong_type_is_400_naming_the_field(
    client: GraphQLClient, payload: dict[str, object], field: str, accept: str
) -> None:
    response = await client.http.post(
        "/graphql", json=payload, headers={"Accept": accept, "X-Demo-User": "alice"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(accept)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == field


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"query": QUERY, "variables": "not json"}, "variables"),
        ({"query": QUERY, "variables": "[1]"}, "variables"),
        ({"query": QUERY, "variables": '"a string"'}, "variables"),
        ({"query": QUERY, "extensions": "{broken"}, "extensions"),
        ({"query": QUERY, "extensions": "42"}, "extensions"),
        ({"variables": "{}"}, "query"),
    ],
)
async def test_a_get_parameter_that_is_not_the_right_json_is_400_naming_the_field(
    client: GraphQLClient, params: dict[str, str], field: str
) -> None:
    response = await client.http.get(
        "/graphql", params=params, headers={"Accept": JSON, "X-Demo-User": "alice"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(JSON)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == field


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
