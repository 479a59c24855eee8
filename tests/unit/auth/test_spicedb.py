"""What the SpiceDB backend makes of odd answers, and its id escaping (spec: auth/spicedb.py).

The conversation with a well-behaved server is covered against the stand-in server in
tests/integration/auth/test_spicedb_backend.py; here a mock transport plays a broken one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcf_api.auth.policy import Action, BackendUnavailable, Resource
from pcf_api.auth.spicedb import SpiceDBBackend, SpiceDBRequestError, escape_id
from support.spicedb_server import OBJECT_ID

pytestmark = pytest.mark.anyio

NOTE = Resource.note("n1")


def backend(answer: Callable[[httpx.Request], httpx.Response]) -> SpiceDBBackend:
    return SpiceDBBackend(
        "http://spicedb.test/", "key", transport=httpx.MockTransport(answer), failure_threshold=100
    )


def replying(status: int, body: Any) -> SpiceDBBackend:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return backend(lambda _: httpx.Response(status, content=content))


async def test_requests_carry_the_preshared_key_and_go_to_the_endpoint_path() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"permissionship": "PERMISSIONSHIP_HAS_PERMISSION"})

    assert await backend(answer).check("alice", NOTE, Action.READ)
    assert seen[0].url == "http://spicedb.test/v1/permissions/check"
    assert seen[0].headers["Authorization"] == "Bearer key"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"not json"),
        (200, []),
        (200, {"permissionship": "PERMISSIONSHIP_MAYBE"}),
        (200, {}),
        (429, {"code": 8, "message": "slow down"}),
        (502, b"<html>bad gateway</html>"),
    ],
    ids=["not-json", "not-object", "unknown-permissionship", "empty", "429", "502-html"],
)
async def test_answers_that_cannot_be_trusted_are_outages(status: int, body: Any) -> None:
    with pytest.raises(BackendUnavailable):
        await replying(status, body).check("alice", NOTE, Action.READ)


async def test_a_conditional_permission_is_a_denial() -> None:
    answer = {"permissionship": "PERMISSIONSHIP_CONDITIONAL_PERMISSION"}

    assert not await replying(200, answer).check("alice", NOTE, Action.READ)


@pytest.mark.parametrize("body", [b"nope", [1], {"code": "x", "message": 3}])
async def test_a_client_error_with_an_odd_body_still_becomes_a_request_error(body: Any) -> None:
    with pytest.raises(SpiceDBRequestError) as caught:
        await replying(400, body).check("alice", NOTE, Action.READ)

    assert caught.value.status == 400
    assert caught.value.code is None
    assert "Bad Request" in str(caught.value)


@pytest.mark.parametrize(
    "pairs",
    [
        None,
        [],
        [{"item": {"permissionship": "PERMISSIONSHIP_HAS_PERMISSION"}}, {}],
        ["not-a-pair"],
        [{"error": {"code": 14, "message": "unavailable"}}],
        [{"error": {"code": 4, "message": "deadline exceeded"}}],
    ],
    ids=["missing", "too-few", "too-many", "malformed", "unavailable", "deadline"],
)
async def test_bulk_answers_that_cannot_be_trusted_are_outages(pairs: Any) -> None:
    with pytest.raises(BackendUnavailable):
        await replying(200, {"pairs": pairs}).filter("alice", Action.READ, [NOTE])


async def test_a_bulk_item_spicedb_could_not_evaluate_for_good_is_denied() -> None:
    pairs = [{"error": {"code": 9, "message": "relation not found"}}]

    assert await replying(200, {"pairs": pairs}).filter("alice", Action.READ, [NOTE]) == set()


async def test_a_write_without_a_token_is_not_remembered_for_consistency() -> None:
    bodies: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.path.endswith("/write"):
            return httpx.Response(200, json={})
        return httpx.Response(200, json={"permissionship": "PERMISSIONSHIP_NO_PERMISSION"})

    spicedb = backend(answer)
    await spicedb.create("n1", "alice")
    await spicedb.check("alice", NOTE, Action.READ)

    assert bodies[-1]["consistency"] == {"minimizeLatency": True}


async def test_only_notes_can_be_checked() -> None:
    with pytest.raises(ValueError, match="not a note"):
        await replying(200, {}).check("alice", Resource("note"), Action.READ)


def test_safe_ids_are_kept_as_they_are() -> None:
    assert escape_id("alice") == "alice"
    assert escape_id("auth0|12/ab_C-d+e") == "auth0|12/ab_C-d+e"


def test_other_characters_and_the_escape_character_itself_are_escaped() -> None:
    assert escape_id("notes:01H") == "notes=3A01H"
    assert escape_id("a=b") == "a=3Db"
    assert escape_id("*") == "=2A"
    assert escape_id("jürgen") == "j=C3=BCrgen"


@given(st.text(min_size=1, max_size=100))
def test_escaped_ids_are_valid_spicedb_ids_and_never_the_wildcard(value: str) -> None:
    escaped = escape_id(value)

    assert OBJECT_ID.match(escaped)
    assert escaped != "*"


@given(st.text(max_size=20), st.text(max_size=20))
def test_distinct_ids_stay_distinct(first: str, second: str) -> None:
    if first != second:
        assert escape_id(first) != escape_id(second)
