"""Bearer tokens on /graphql, end to end: keys from a local OIDC issuer found by discovery,
key rotation without a restart, and every kind of bad token refused with 401 and a challenge."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from pcf_api.composition import build_service
from support.jwks_server import AUDIENCE, JwksServer, rsa_key
from support.logs import capture_logs

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

WHO = "{ notes { totalCount } }"
CREATE = 'mutation { createNote(input: {title: "t", content: "c", author: "carol"}) { author } }'


@pytest.fixture
def issuer() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
async def client(database_url: str, issuer: JwksServer) -> AsyncIterator[GraphQLClient]:
    settings = settings_for(
        database_url,
        PCF_AUTH__ISSUER=issuer.issuer,
        PCF_AUTH__AUDIENCE=AUDIENCE,
        PCF_AUTH__DEMO_USER="",  # tokens only, as in production
        # An unknown kid may refetch the keys at once (60 s apart by default).
        PCF_AUTH__JWKS_REFRESH_MIN_INTERVAL_SECONDS="0",
    )
    async with running(build_service(settings)) as http:
        yield GraphQLClient(http, user=None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rs256_and_es256_tokens_identify_the_caller(
    client: GraphQLClient, issuer: JwksServer
) -> None:
    for key in (issuer.rsa, issuer.ec):
        response = await client.post(CREATE, headers=bearer(issuer.token(key, sub="carol")))
        assert response.status_code == 200, response.json()
        assert response.json()["data"]["createNote"]["author"] == "carol"


async def test_a_rotated_in_key_works_without_a_restart(
    client: GraphQLClient, issuer: JwksServer
) -> None:
    assert (await client.post(WHO, headers=bearer(issuer.token()))).status_code == 200
    new_key = rsa_key("rsa-2")
    issuer.rotate(new_key, drop=issuer.rsa)
    response = await client.post(WHO, headers=bearer(issuer.token(new_key)))
    assert response.status_code == 200, response.json()


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _unsigned(issuer: JwksServer) -> str:
    # PyJWT types the key as never None; for "none" it takes "" as no key, the same token.
    return jwt.encode(issuer.claims(), key="", algorithm="none")


def _hs256_with_the_public_key(issuer: JwksServer) -> str:
    """The classic confusion attack: HMAC keyed with the RSA public key the issuer publishes."""
    secret = issuer.rsa.public_pem().encode()
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.rsa.kid}
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, issuer.claims())
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


BAD_TOKENS: dict[str, Callable[[JwksServer], str]] = {
    "expired": lambda issuer: issuer.token(exp=int(time.time()) - 3600),
    "not yet valid": lambda issuer: issuer.token(nbf=int(time.time()) + 3600),
    "wrong audience": lambda issuer: issuer.token(aud="someone-else"),
    "wrong issuer": lambda issuer: issuer.token(iss="https://evil.example"),
    "alg none": _unsigned,
    "HS256 keyed with the RSA public key": _hs256_with_the_public_key,
    "tampered": lambda issuer: _tampered(issuer.token()),
    "signed by an unknown key": lambda issuer: rsa_key("rsa-1").sign(issuer.claims()),
    "not a JWT": lambda issuer: "abc.def",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_tokens_get_401_with_a_bearer_challenge(
    client: GraphQLClient, issuer: JwksServer, kind: str
) -> None:
    token = BAD_TOKENS[kind](issuer)
    with capture_logs() as logs:
        response = await client.post(WHO, headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHORIZED"
    assert token not in response.text
    assert token not in logs.text()


async def test_no_token_gets_401_without_an_error_code(client: GraphQLClient) -> None:
    response = await client.post(WHO)
    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]  # RFC 6750 §3.1


async def test_a_malformed_authorization_header_is_an_invalid_request(
    client: GraphQLClient,
) -> None:
    response = await client.post(WHO, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_introspection_needs_no_identity_in_development(client: GraphQLClient) -> None:
    response = await client.post("{ __schema { queryType { name } } }")
    assert response.status_code == 200
    assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def _readiness_when(http: Any, predicate: Any) -> dict[str, Any]:
    for _ in range(100):
        report: dict[str, Any] = (await http.get("/health/ready")).json()
        if predicate(report):
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"readiness never matched: {report}")


async def test_readiness_is_degraded_while_the_issuers_keys_cannot_be_loaded(
    database_url: str, issuer: JwksServer
) -> None:
    issuer.failing = True
    settings = settings_for(
        database_url,
        PCF_AUTH__ISSUER=issuer.issuer,
        PCF_AUTH__AUDIENCE=AUDIENCE,
        PCF_AUTH__DEMO_USER="",
        PCF_AUTH__JWKS_REFRESH_MIN_INTERVAL_SECONDS="0",
        PCF_HEALTH__CHECK_INTERVAL_SECONDS="0.2",
    )
    async with running(build_service(settings)) as http:

        def keys(status: str) -> Any:
            return lambda report: (
                report["status"] != "starting"
                and report["services"]["identity_keys"]["status"] == status
            )

        down = await _readiness_when(http, keys("down"))
        assert down["status"] == "degraded"
        refused = await http.post("/graphql", json={"query": WHO}, headers=bearer(issuer.token()))
        assert refused.status_code == 503

        issuer.failing = False
        up = await _readiness_when(http, keys("up"))
        assert up["status"] == "healthy"
        served = await http.post("/graphql", json={"query": WHO}, headers=bearer(issuer.token()))
        assert served.status_code == 200


async def test_with_only_an_hs256_secret_the_issuer_is_never_asked_for_keys(
    tmp_path: Path, issuer: JwksServer
) -> None:
    """``auth.issuer`` is then the ``iss`` to check, not a key source: no discovery at start or
    from the readiness checks, and readiness healthy rather than degraded for good."""
    secret = "only-hs256-test-secret-0123456789abcdef"
    settings = settings_for(
        f"sqlite+aiosqlite:///{tmp_path}/notes.db",
        PCF_AUTH__ISSUER=issuer.issuer,
        PCF_AUTH__HS256_SECRET=secret,
        PCF_AUTH__DEMO_USER="",
        PCF_HEALTH__CHECK_INTERVAL_SECONDS="0.2",
    )
    async with running(build_service(settings)) as http:
        await _readiness_when(http, lambda report: report["status"] != "starting")
        await asyncio.sleep(1.0)  # five readiness checks
        report = (await http.get("/health/ready")).json()

        claims = {"sub": "carol", "exp": int(time.time()) + 300}
        ours = jwt.encode({**claims, "iss": issuer.issuer}, secret, "HS256")
        theirs = jwt.encode({**claims, "iss": "https://elsewhere.example"}, secret, "HS256")
        served = await http.post("/graphql", json={"query": WHO}, headers=bearer(ours))
        refused = await http.post("/graphql", json={"query": WHO}, headers=bearer(theirs))

    assert issuer.hits == {}
    assert report["status"] == "healthy", report
    assert "identity_keys" not in report["services"]
    assert served.status_code == 200, served.json()
    assert refused.status_code == 401
