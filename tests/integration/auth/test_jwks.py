"""Tokens verified with keys fetched from a real local issuer (spec: auth/keys.py JwksKeySet).

The issuer serves an OIDC discovery document and a JWKS with RSA and EC keys made at test time.
Keys are cached by kid; an unknown kid triggers at most one refresh per interval; rotation is
picked up without a restart; while the issuer is down, cached keys keep working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from pcf_api.auth.errors import AuthenticationError, AuthenticationUnavailable
from pcf_api.auth.keys import JwksKeySet
from pcf_api.auth.tokens import TokenVerifier
from pcf_api.errors import ErrorCode
from support.jwks_server import AUDIENCE, JwksServer, ec_key, rsa_key
from support.logs import capture_logs

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def keys(issuer: JwksServer, clock: Clock) -> AsyncIterator[JwksKeySet]:
    key_set = JwksKeySet(issuer=issuer.issuer, timeout=1.0, min_refresh_interval=60, clock=clock)
    yield key_set
    await key_set.aclose()


@pytest.fixture
def verifier(issuer: JwksServer, keys: JwksKeySet) -> TokenVerifier:
    return TokenVerifier(
        algorithms={"RS256", "ES256"}, issuer=issuer.issuer, audience=AUDIENCE, leeway=0, keys=keys
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def rejected(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    assert caught.value.error == "invalid_token"
    return caught.value.description


async def test_rs256_and_es256_tokens_verify_with_keys_found_through_discovery(
    issuer: JwksServer, verifier: TokenVerifier
) -> None:
    rsa_identity = await verifier.verify(issuer.token(issuer.rsa, sub="rita"))
    ec_identity = await verifier.verify(issuer.token(issuer.ec, sub="eric"))

    assert (rsa_identity.subject, ec_identity.subject) == ("rita", "eric")
    assert rsa_identity.issuer == issuer.issuer
    assert issuer.hits["/.well-known/openid-configuration"] == 1
    assert issuer.jwks_fetches == 1  # one fetch serves every later token


async def test_a_jwks_url_needs_no_discovery(issuer: JwksServer) -> None:
    keys = JwksKeySet(jwks_url=issuer.jwks_url, timeout=1.0)
    verifier = TokenVerifier(algorithms={"RS256"}, audience=AUDIENCE, keys=keys)
    try:
        await verifier.start()
        assert (await verifier.verify(issuer.token())).subject == "alice"
    finally:
        await verifier.aclose()

    assert issuer.hits["/.well-known/openid-configuration"] == 0


async def test_expired_premature_wrong_issuer_and_wrong_audience_tokens_are_rejected(
    issuer: JwksServer, verifier: TokenVerifier
) -> None:
    now = int(time.time())

    assert await rejected(verifier, issuer.token(exp=now - 1)) == "The token has expired."
    assert await rejected(verifier, issuer.token(nbf=now + 60)) == "The token is not valid yet."
    assert await rejected(verifier, issuer.token(iss="https://other")) == (
        "The token was not issued by a trusted issuer."
    )
    assert await rejected(verifier, issuer.token(aud="other-api")) == (
        "The token is not meant for this service."
    )
    assert await rejected(verifier, issuer.token(sub=None)) == "The token lacks a required claim."


async def test_a_token_signed_by_a_key_the_issuer_does_not_publish_is_rejected(
    issuer: JwksServer, verifier: TokenVerifier
) -> None:
    impostor = rsa_key("rsa-1")  # same kid, different key

    assert await rejected(verifier, issuer.token(impostor)) == "The token's signature is invalid."


async def test_an_hs256_token_signed_with_the_published_rsa_key_is_rejected(
    issuer: JwksServer, verifier: TokenVerifier
) -> None:
    # PyJWT refuses to sign HS256 with a PEM key; an attacker would not, so build it by hand.
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(issuer.claims()).encode())
    pem = issuer.rsa.public_pem().encode()
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"

    assert await rejected(verifier, token) == "The token's signing algorithm is not allowed."


async def test_an_unknown_kid_triggers_one_refresh_and_then_waits_for_the_interval(
    issuer: JwksServer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    clock.now += 60
    stranger = rsa_key("unknown-kid")

    for _ in range(5):
        assert await rejected(verifier, issuer.token(stranger)) == (
            "The token's signing key is unknown."
        )

    assert issuer.jwks_fetches == 2  # the first load, then one refresh for the unknown kid
    clock.now += 60
    await rejected(verifier, issuer.token(stranger))
    assert issuer.jwks_fetches == 3


async def test_a_rotated_key_is_picked_up_without_a_restart(
    issuer: JwksServer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    clock.now += 61
    new = ec_key("ec-2")
    issuer.rotate(new, drop=issuer.rsa)

    with capture_logs() as logs:
        identity = await verifier.verify(issuer.token(new, sub="rotated"))

    assert identity.subject == "rotated"
    assert logs.find("signing keys loaded", keys=2, kids=["ec-1", "ec-2"])


async def test_while_the_issuer_is_down_cached_keys_keep_working(
    issuer: JwksServer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    issuer.stop()
    clock.now += 3601  # past the keys' maximum age: a refresh is attempted and fails

    with capture_logs() as logs:
        assert (await verifier.verify(issuer.token(issuer.ec, sub="still"))).subject == "still"
        assert await rejected(verifier, issuer.token(rsa_key("new-kid"))) == (
            "The token's signing key is unknown."
        )

    warnings = logs.find("signing keys could not be fetched; keeping the cached keys")
    assert warnings
    assert warnings[0]["cached_keys"] == 2


async def test_an_issuer_answering_errors_also_keeps_the_cached_keys(
    issuer: JwksServer, verifier: TokenVerifier, clock: Clock
) -> None:
    await verifier.verify(issuer.token())
    issuer.failing = True
    clock.now += 61

    await rejected(verifier, issuer.token(rsa_key("new-kid")))
    assert (await verifier.verify(issuer.token())).subject == "alice"


async def test_when_keys_could_never_be_loaded_tokens_get_503_and_loading_is_retried(
    issuer: JwksServer, verifier: TokenVerifier, keys: JwksKeySet, clock: Clock
) -> None:
    issuer.stop()
    await keys.start()
    assert not keys.loaded

    with pytest.raises(AuthenticationUnavailable) as refused:
        await verifier.verify(issuer.token())
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert keys.fetches == 1  # retried at most every 5 s while nothing is loaded

    issuer.start()
    clock.now += 5
    assert (await verifier.verify(issuer.token())).subject == "alice"
    assert keys.loaded


@pytest.mark.parametrize(
    "overrides",
    [{"issuer": "https://impostor.example"}, {"jwks_uri": None}],
    ids=["another-issuer", "no-jwks-uri"],
)
async def test_a_discovery_document_that_does_not_fit_the_issuer_is_not_trusted(
    issuer: JwksServer, keys: JwksKeySet, overrides: dict[str, object]
) -> None:
    issuer.discovery_overrides = overrides

    with capture_logs() as logs:
        await keys.start()

    assert not keys.loaded
    assert issuer.jwks_fetches == 0
    assert logs.find("signing keys could not be fetched; keeping the cached keys")


async def test_a_key_set_needs_a_url_or_an_issuer() -> None:
    with pytest.raises(ValueError, match="JWKS URL or an issuer"):
        JwksKeySet()
