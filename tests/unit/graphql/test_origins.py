"""The origin rule (CORS and the WebSocket upgrade) and the connection_init token shapes."""

from __future__ import annotations

from typing import Any

import pytest

from pcf_api.auth.identity import AuthenticationError
from pcf_api.graphql.admission import connection_authorization
from pcf_api.graphql.origins import origin_allowed

DEV = r"^http://(localhost|127\.0\.0\.1)(:\d+)?$"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("http://localhost:3000", True),
        ("http://127.0.0.1", True),
        ("https://app.example.com:8443", False),
        ("https://APP.example.com.evil", False),
        ("http://localhost:3000.evil.example", False),  # the pattern must match as a whole
        ("https://localhost:3000", False),
        ("null", False),
    ],
)
def test_origins_match_exactly_or_by_the_whole_pattern(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, ["https://app.example.com"], DEV) is allowed


def test_no_origin_is_allowed_by_default_and_star_allows_all() -> None:
    assert not origin_allowed("https://app.example.com", [], None)
    assert origin_allowed("https://anything.example", ["*"], None)


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": "Bearer t0k"},
        {"authorization": "bearer t0k"},
        {"Authorization": "t0k"},
        {"authToken": " t0k "},
        {"headers": {"Authorization": "Bearer t0k"}},
        {"headers": {"authorization": "t0k"}},
    ],
)
def test_each_payload_shape_gives_a_bearer_value(payload: dict[str, Any]) -> None:
    value = connection_authorization(payload)
    assert value is not None
    assert value.split() == [value.split()[0], "t0k"]
    assert value.split()[0].lower() == "bearer"


@pytest.mark.parametrize(
    "payload", [None, {}, {"authToken": ""}, {"headers": "x"}, {"token": "t0k"}]
)
def test_a_payload_without_a_token_gives_none(payload: dict[str, Any] | None) -> None:
    assert connection_authorization(payload) is None


def test_a_token_that_is_not_a_string_is_an_invalid_request() -> None:
    with pytest.raises(AuthenticationError) as refused:
        connection_authorization({"authToken": 42})
    assert refused.value.error == "invalid_request"
