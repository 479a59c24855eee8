"""Tokens minted from the HS256 secret are exactly what the service's verifier accepts."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from pydantic import SecretStr

from pcf_api.auth.minting import MAX_TTL_SECONDS, MintError, mint_hs256, parse_duration
from pcf_api.auth.tokens import TokenVerifier
from pcf_api.config import AuthSettings

SECRET = "minting-test-Hs256-secret-0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        (" 2d ", 172_800),
        ("7d", MAX_TTL_SECONDS),
    ],
)
def test_durations_read_as_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "1w", "1.5h", "h", "8d", "1h30m"])
def test_other_durations_are_refused_saying_what_is_allowed(text: str) -> None:
    with pytest.raises(MintError, match=r"90s, 15m, 1h, 2d\), at most 7 days"):
        parse_duration(text)


def test_the_token_carries_the_configured_issuer_and_audience_and_verifies() -> None:
    auth = AuthSettings(
        hs256_secret=SecretStr(SECRET), issuer="https://issuer.test", audience="pcf-api"
    )

    token = mint_hs256(auth, "ana@example.com", 600, now=1_700_000_000)

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "ana@example.com",
        "iat": 1_700_000_000,
        "exp": 1_700_000_600,
        "iss": "https://issuer.test",
        "aud": "pcf-api",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    fresh = mint_hs256(auth, "ana@example.com", 600)
    verifier = TokenVerifier(
        algorithms=auth.allowed_algorithms(),
        issuer=auth.issuer,
        audience=auth.audience,
        hs256_secret=SECRET,
    )
    assert asyncio.run(verifier.verify(fresh)).subject == "ana@example.com"


def test_without_issuer_and_audience_the_token_has_neither() -> None:
    token = mint_hs256(AuthSettings(hs256_secret=SecretStr(SECRET)), "bob", 60)

    assert set(jwt.decode(token, options={"verify_signature": False})) == {"sub", "iat", "exp"}


@pytest.mark.parametrize(
    ("auth", "subject", "message"),
    [
        (AuthSettings(), "bob", "No HS256 secret is configured"),
        (
            AuthSettings(hs256_secret=SecretStr(SECRET), algorithms=["RS256"]),
            "bob",
            "HS256 is not among auth.algorithms",
        ),
        (AuthSettings(hs256_secret=SecretStr(SECRET)), "  ", "1 to 100 characters"),
        (AuthSettings(hs256_secret=SecretStr(SECRET)), "x" * 101, "1 to 100 characters"),
    ],
)
def test_a_token_the_service_would_refuse_is_not_minted(
    auth: AuthSettings, subject: str, message: str
) -> None:
    with pytest.raises(MintError, match=message):
        mint_hs256(auth, subject, 60)
