"""Bearer token verification and the demo identity (spec: auth/tokens.py and auth/keys.py).

Every rejected token is a 401 with an RFC 6750 challenge whose description is a fixed sentence;
the token's content never appears in it. Keys here are a shared secret and local PEM/JWKS files;
tests/integration/auth/test_jwks.py covers keys fetched from an issuer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from pcf_api.auth.authorizer import Authorizer
from pcf_api.auth.errors import AuthenticationError
from pcf_api.auth.keys import JwksKeySet, StaticKeys, parse_key_document
from pcf_api.auth.local import LocalBackend
from pcf_api.auth.spicedb import SpiceDBBackend
from pcf_api.auth.tokens import (
    Authenticator,
    Identity,
    TokenVerifier,
    bearer_token,
    verified_bytes,
)
from pcf_api.composition import create_authenticator, create_authorizer, create_verifier
from pcf_api.config import AuthSettings, AuthzSettings, DatabaseSettings, Settings
from pcf_api.errors import ErrorCode
from pcf_api.store.database import create_database
from support.jwks_server import SigningKey, ec_key, rsa_key
from support.memory import retained_bytes

pytestmark = pytest.mark.anyio

SECRET = "unit-test-hs256-secret-0123456789abcdef"
ISSUER = "https://issuer.example"
AUDIENCE = "pcf-api"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300}
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def hs256(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, "HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, for what PyJWT refuses to produce (alg none, HMAC with a PEM)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


def verifier(**options: Any) -> TokenVerifier:
    settings: dict[str, Any] = {
        "algorithms": {"RS256", "ES256", "HS256"},
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway": 30,
        "hs256_secret": SECRET,
    }
    settings.update(options)
    return TokenVerifier(**settings)


async def rejected(token_verifier: TokenVerifier, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await token_verifier.verify(token)
    error = caught.value
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.error == "invalid_token"
    return error


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def ec() -> SigningKey:
    return ec_key("ec-1")


# --- Valid tokens -----------------------------------------------------------------------------


async def test_a_valid_hs256_token_gives_the_subject_and_its_details() -> None:
    token = hs256(scope="notes:read notes:write")

    identity = await verifier().verify(token)

    assert identity.subject == "alice"
    assert identity.method == "bearer"
    assert identity.issuer == ISSUER
    assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]
    assert identity.scopes == {"notes:read", "notes:write"}


async def test_scopes_may_come_as_an_scp_list() -> None:
    identity = await verifier().verify(hs256(scp=["a", "b"]))

    assert identity.scopes == {"a", "b"}


async def test_the_authorization_header_is_parsed_case_insensitively() -> None:
    identity = await verifier().authenticate(f"bearer  {hs256()} ")

    assert identity.subject == "alice"


async def test_without_a_configured_audience_the_tokens_audience_is_not_checked() -> None:
    identity = await verifier(audience=None).verify(hs256(aud="another-service"))

    assert identity.subject == "alice"


# --- Claims -----------------------------------------------------------------------------------


async def test_an_expired_token_is_rejected_with_an_rfc6750_challenge() -> None:
    error = await rejected(verifier(), hs256(exp=int(time.time()) - 31))

    assert error.description == "The token has expired."
    assert error.message == "The token has expired."
    assert error.headers["WWW-Authenticate"] == (
        'Bearer realm="pcf-api", error="invalid_token", error_description="The token has expired."'
    )


async def test_expiry_and_not_before_allow_the_configured_leeway() -> None:
    now = int(time.time())

    assert await verifier().verify(hs256(exp=now - 20))
    assert await verifier().verify(hs256(nbf=now + 20))
    assert (await rejected(verifier(leeway=0), hs256(exp=now - 1))).description == (
        "The token has expired."
    )


async def test_a_token_not_valid_yet_is_rejected() -> None:
    error = await rejected(verifier(), hs256(nbf=int(time.time()) + 60))

    assert error.description == "The token is not valid yet."


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"iss": "https://evil.example"}, "The token was not issued by a trusted issuer."),
        ({"aud": "another-service"}, "The token is not meant for this service."),
        ({"iss": None}, "The token lacks a required claim."),
        ({"aud": None}, "The token lacks a required claim."),
        ({"exp": None}, "The token lacks a required claim."),
        ({"sub": None}, "The token lacks a required claim."),
        ({"sub": "  "}, "The token lacks a required claim."),
        ({"sub": "x" * 101}, "The token's subject is too long."),
    ],
    ids=["wrong-iss", "wrong-aud", "no-iss", "no-aud", "no-exp", "no-sub", "blank-sub", "long-sub"],
)
async def test_claims_that_do_not_check_out_are_rejected(
    overrides: dict[str, Any], description: str
) -> None:
    error = await rejected(verifier(), hs256(**overrides))

    assert error.description == description


NOT_A_TIME = "The token's {} claim must be a number of seconds since 1970, before the year 10000."


@pytest.mark.parametrize(
    ("claim", "value", "description"),
    [
        # A numeric string far in the future: PyJWT reads it as a number, pcf-api refuses it.
        ("exp", str(int(time.time()) + 10 * 365 * 86400), NOT_A_TIME.format("exp")),
        ("exp", 1e300, NOT_A_TIME.format("exp")),
        ("exp", 2**63, NOT_A_TIME.format("exp")),
        ("nbf", "0", NOT_A_TIME.format("nbf")),
        ("nbf", -1, NOT_A_TIME.format("nbf")),
        ("iat", -1.5, NOT_A_TIME.format("iat")),
        # PyJWT's own checks come first where they refuse: True reads as 1, long expired.
        ("exp", True, "The token has expired."),
        ("iat", 1e300, "The token is not valid yet."),
    ],
    ids=[
        "exp-string",
        "exp-1e300",
        "exp-2^63",
        "nbf-string",
        "nbf-negative",
        "iat-negative",
        "exp-bool",
        "iat-1e300",
    ],
)
async def test_time_claims_must_be_numbers_of_seconds_in_a_sane_range(
    claim: str, value: object, description: str
) -> None:
    overrides: dict[str, Any] = {claim: value}
    error = await rejected(verifier(), hs256(**overrides))

    assert error.description == description


async def test_a_time_claim_may_be_a_finite_float() -> None:
    identity = await verifier().verify(hs256(exp=time.time() + 300.5, iat=time.time()))

    assert identity.subject == "alice"


@pytest.mark.parametrize("subject", ["ali\x00ce", "ali\ud800ce"], ids=["nul", "lone-surrogate"])
async def test_a_subject_the_database_cannot_store_is_rejected(subject: str) -> None:
    token = handmade({"alg": "HS256", "typ": "JWT"}, claims(sub=subject), SECRET.encode())

    error = await rejected(verifier(), token)

    assert error.description == (
        "The token's subject must be Unicode text without NUL characters or lone surrogates."
    )


async def test_a_non_string_subject_is_rejected() -> None:
    error = await rejected(verifier(), hs256(sub=42))

    assert error.description in ("The token is invalid.", "The token lacks a required claim.")


async def test_the_description_never_contains_token_content() -> None:
    token = hs256(iss="https://secret-issuer.example", sub="secret-subject")

    error = await rejected(verifier(), token)

    shown = error.message + error.headers["WWW-Authenticate"]
    assert "secret" not in shown
    assert token not in shown


# --- Signatures and algorithms ----------------------------------------------------------------


async def test_a_token_signed_with_another_secret_is_rejected() -> None:
    error = await rejected(verifier(), hs256(secret="another-secret-0123456789abcdefghij"))

    assert error.description == "The token's signature is invalid."


async def test_a_tampered_token_is_rejected() -> None:
    header, _, signature = hs256().split(".")
    forged_payload = b64(json.dumps(claims(sub="mallory")).encode())

    error = await rejected(verifier(), f"{header}.{forged_payload}.{signature}")

    assert error.description == "The token's signature is invalid."


async def test_alg_none_is_rejected_even_when_listed_nowhere() -> None:
    token = handmade({"alg": "none", "typ": "JWT"}, claims(), None)

    error = await rejected(verifier(), token)

    assert error.description == "The token's signing algorithm is not allowed."
    with pytest.raises(ValueError, match="unsupported algorithms"):
        TokenVerifier(algorithms={"none"})


async def test_an_algorithm_outside_the_allow_list_is_rejected() -> None:
    token = jwt.encode(claims(), SECRET * 2, "HS384")

    error = await rejected(verifier(), token)

    assert error.description == "The token's signing algorithm is not allowed."


async def test_hmac_tokens_are_refused_when_no_secret_is_configured(rsa: SigningKey) -> None:
    keys = StaticKeys(parse_key_document(rsa.public_pem()))

    error = await rejected(verifier(hs256_secret=None, keys=keys), hs256())

    assert error.description == "The token's signing algorithm is not allowed."


@pytest.mark.parametrize("secret", [None, SECRET], ids=["no-secret", "with-secret"])
async def test_an_hs256_token_signed_with_the_rsa_public_key_is_rejected(
    rsa: SigningKey, secret: str | None
) -> None:
    # The classic confusion attack: the attacker knows the public key and uses it as an
    # HMAC secret, hoping the server verifies HS256 with whatever key it holds.
    pem = rsa.public_pem().encode()
    token = handmade({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims(), pem)
    keys = StaticKeys(parse_key_document(rsa.public_pem()))

    error = await rejected(verifier(hs256_secret=secret, keys=keys), token)

    assert error.description in (
        "The token's signing algorithm is not allowed.",
        "The token's signature is invalid.",
    )


async def test_rsa_tokens_are_refused_when_no_public_keys_are_configured(rsa: SigningKey) -> None:
    error = await rejected(verifier(), rsa.sign(claims()))

    assert error.description == "The token's signing algorithm is not allowed."


async def test_a_token_whose_header_names_the_wrong_algorithm_for_the_key_is_rejected(
    rsa: SigningKey, ec: SigningKey
) -> None:
    keys = StaticKeys([rsa.public_jwk, ec.public_jwk])
    token = jwt.encode(claims(), ec.private_key, "ES256", headers={"kid": "rsa-1"})

    error = await rejected(verifier(keys=keys), token)

    assert error.description == "The token's signing key is unknown."


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
async def test_a_token_that_is_not_a_jwt_is_malformed(token: str) -> None:
    error = await rejected(verifier(), token)

    assert error.description in ("The token is malformed.", "The token's signature is invalid.")


async def test_an_oversized_token_is_rejected_before_parsing() -> None:
    error = await rejected(verifier(), "a" * 9000)

    assert error.description == "The token is too large."


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Token abc", "Bearer a,b"]
)
async def test_an_authorization_header_that_is_not_bearer_token_is_an_invalid_request(
    header: str,
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        bearer_token(header)

    assert caught.value.error == "invalid_request"
    assert 'error="invalid_request"' in caught.value.headers["WWW-Authenticate"]


# --- The verified-token cache ----------------------------------------------------------------


class CountingKeys(StaticKeys):
    def __init__(self, key: SigningKey) -> None:
        super().__init__([key.public_jwk])
        self.lookups = 0

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        self.lookups += 1
        return await super().key_for(kid, algorithm)


async def test_a_token_seen_before_is_not_verified_again(rsa: SigningKey) -> None:
    keys = CountingKeys(rsa)
    token_verifier = verifier(keys=keys)
    token = rsa.sign(claims())

    first = await token_verifier.verify(token)
    second = await token_verifier.verify(token)

    assert first == second
    assert keys.lookups == 1
    await token_verifier.verify(rsa.sign(claims(sub="bob")))
    assert keys.lookups == 2


async def test_a_remembered_token_still_expires(rsa: SigningKey) -> None:
    now = [time.time()]
    token_verifier = verifier(keys=StaticKeys([rsa.public_jwk]), wall_clock=lambda: now[0])
    token = rsa.sign(claims(exp=int(now[0]) + 60))
    await token_verifier.verify(token)

    now[0] += 60 + 29
    assert (await token_verifier.verify(token)).subject == "alice"
    now[0] += 2
    assert (await rejected(token_verifier, token)).description == "The token has expired."


async def test_failed_tokens_are_not_remembered_and_the_cache_can_be_off(rsa: SigningKey) -> None:
    keys = CountingKeys(rsa)
    token = rsa.sign(claims(aud="other"))
    token_verifier = verifier(keys=keys)
    for _ in range(2):
        await rejected(token_verifier, token)
    assert keys.lookups == 2

    uncached = verifier(keys=keys, cache_size=0)
    good = rsa.sign(claims())
    await uncached.verify(good)
    await uncached.verify(good)
    assert keys.lookups == 4


# --- Local key files --------------------------------------------------------------------------


async def test_a_pem_public_key_file_verifies_tokens_without_a_kid(
    tmp_path: Path, rsa: SigningKey
) -> None:
    path = tmp_path / "key.pem"
    path.write_text(rsa.public_pem())
    token = jwt.encode(claims(), rsa.private_key, "RS256")

    identity = await verifier(keys=StaticKeys.from_file(path)).verify(token)

    assert identity.subject == "alice"


async def test_a_jwks_file_with_rsa_and_ec_keys_picks_the_key_by_kid(
    tmp_path: Path, rsa: SigningKey, ec: SigningKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa.public_jwk, ec.public_jwk]}))
    keys = StaticKeys.from_file(path)
    token_verifier = verifier(keys=keys)

    assert (await token_verifier.verify(rsa.sign(claims(sub="r")))).subject == "r"
    assert (await token_verifier.verify(ec.sign(claims(sub="e")))).subject == "e"
    unknown = jwt.encode(claims(), rsa.private_key, "RS256", headers={"kid": "rsa-9"})
    assert (await rejected(token_verifier, unknown)).description == (
        "The token's signing key is unknown."
    )


async def test_without_a_kid_several_fitting_keys_are_ambiguous(rsa: SigningKey) -> None:
    other = rsa_key("rsa-2")
    keys = StaticKeys([rsa.public_jwk, other.public_jwk])
    token = jwt.encode(claims(), rsa.private_key, "RS256")

    error = await rejected(verifier(keys=keys), token)

    assert error.description == "The token's signing key is unknown."


def test_pem_files_may_hold_ec_keys_and_certificates(rsa: SigningKey, ec: SigningKey) -> None:
    certificate = _self_signed(rsa)

    keys = parse_key_document(ec.public_pem() + "\n" + certificate)

    assert [key["kty"] for key in keys] == ["EC", "RSA"]
    assert keys[0]["crv"] == "P-256"


def test_a_single_jwk_is_a_key_set_of_one(ec: SigningKey) -> None:
    assert parse_key_document(json.dumps(ec.public_jwk)) == [ec.public_jwk]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"issuer": "x"}', "not a JWKS"),
        ("[]", "not a JWKS"),
        ("-----BEGIN PUBLIC KEY-----\nnope", "no PEM block"),
    ],
)
def test_documents_that_hold_no_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key_document(text)


def test_a_private_key_file_is_refused(rsa: SigningKey) -> None:
    private = rsa.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    with pytest.raises(ValueError, match="private key"):
        parse_key_document(private)


async def test_symmetric_and_encryption_keys_in_a_key_set_are_never_used(rsa: SigningKey) -> None:
    oct_key = {"kty": "oct", "kid": "oct-1", "k": b64(SECRET.encode())}
    encryption = {**rsa.public_jwk, "kid": "enc-1", "use": "enc"}
    keys = StaticKeys([oct_key, encryption])
    hs_token = jwt.encode(claims(), SECRET, "HS256", headers={"kid": "oct-1"})
    rs_token = jwt.encode(claims(), rsa.private_key, "RS256", headers={"kid": "enc-1"})

    token_verifier = verifier(hs256_secret=None, keys=keys, algorithms={"RS256", "HS256"})

    assert (await rejected(token_verifier, hs_token)).description == (
        "The token's signing algorithm is not allowed."
    )
    assert (await rejected(token_verifier, rs_token)).description == (
        "The token's signing key is unknown."
    )
    rs_with_oct_kid = jwt.encode(claims(), rsa.private_key, "RS256", headers={"kid": "oct-1"})
    assert (await rejected(token_verifier, rs_with_oct_kid)).description == (
        "The token's signing key is unknown."
    )


async def test_an_rsa_jwk_without_alg_verifies_any_allowed_rsa_algorithm(rsa: SigningKey) -> None:
    jwk = {key: value for key, value in rsa.public_jwk.items() if key != "alg"}
    token_verifier = verifier(keys=StaticKeys([jwk]), algorithms={"RS256", "PS256"})

    for algorithm in ("RS256", "PS256"):
        token = jwt.encode(claims(), rsa.private_key, algorithm, headers={"kid": "rsa-1"})
        assert (await token_verifier.verify(token)).subject == "alice"


async def test_an_unusable_jwk_is_ignored() -> None:
    broken = {"kty": "EC", "crv": "P-256", "kid": "ec-x", "x": "AAAA", "y": "AAAA"}
    ec_signer = ec_key("ec-x")
    token = ec_signer.sign(claims())

    error = await rejected(verifier(keys=StaticKeys([broken])), token)

    assert error.description == "The token's signing key is unknown."


async def test_an_ed25519_pem_key_verifies_eddsa_tokens() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = StaticKeys(parse_key_document(pem.decode()))
    token = jwt.encode(claims(), private, "EdDSA")

    identity = await verifier(keys=keys, algorithms={"EdDSA"}).verify(token)

    assert identity.subject == "alice"


def test_a_pem_key_of_an_unsupported_type_is_refused() -> None:
    private = dsa.generate_private_key(key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(ValueError, match="unsupported public key type"):
        parse_key_document(pem.decode())


def _self_signed(key: SigningKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key.private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# --- The caller of a request ------------------------------------------------------------------


async def test_without_a_token_or_demo_user_authentication_is_required() -> None:
    with pytest.raises(AuthenticationError) as caught:
        await Authenticator(verifier()).authenticate(None)

    assert caught.value.error is None
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="pcf-api"'


async def test_the_demo_user_is_the_caller_when_no_token_is_sent() -> None:
    authenticator = Authenticator(verifier(), demo_user="demo")

    assert await authenticator.authenticate(None) == Identity("demo", "demo")
    assert await authenticator.authenticate("", "bob@example.com") == Identity(
        "bob@example.com", "demo"
    )


@pytest.mark.parametrize("header", ["", "two words", "x" * 101, "tab\there"])
async def test_an_unusable_demo_user_header_is_an_invalid_request(header: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await Authenticator(None, demo_user="demo").authenticate(None, header)

    assert caught.value.error == "invalid_request"


async def test_a_token_wins_over_the_demo_identity_and_is_verified() -> None:
    authenticator = Authenticator(verifier(), demo_user="demo")

    assert (await authenticator.authenticate(f"Bearer {hs256()}", "bob")).subject == "alice"
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate("Bearer forged.token.value", "bob")


async def test_tokens_are_refused_when_no_keys_are_configured() -> None:
    with pytest.raises(AuthenticationError) as caught:
        await Authenticator(None, demo_user="demo").authenticate(f"Bearer {hs256()}")

    assert caught.value.error == "invalid_token"


class RecordingKeys:
    """A key source that remembers being started and closed, with the keys of a static one."""

    def __init__(self, keys: StaticKeys) -> None:
        self.keys = keys
        self.calls: list[str] = []

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        return await self.keys.key_for(kid, algorithm)

    async def start(self) -> None:
        self.calls.append("start")

    async def aclose(self) -> None:
        self.calls.append("aclose")


async def test_starting_and_closing_pass_through_to_the_key_source(rsa: SigningKey) -> None:
    keys = RecordingKeys(StaticKeys([rsa.public_jwk]))
    authenticator = Authenticator(verifier(keys=keys))

    await authenticator.start()
    assert keys.calls == ["start"]
    identity = await authenticator.authenticate(f"Bearer {rsa.sign(claims())}")
    assert identity.subject == "alice"
    await authenticator.aclose()
    assert keys.calls == ["start", "aclose"]


async def test_starting_and_closing_without_a_verifier_changes_nothing() -> None:
    bare = Authenticator(None, demo_user="demo")

    await bare.start()
    await bare.aclose()

    assert (await bare.authenticate(None)).subject == "demo"
    with pytest.raises(AuthenticationError) as caught:
        await bare.authenticate(f"Bearer {hs256()}")
    assert caught.value.error == "invalid_token"


# --- Construction from settings ---------------------------------------------------------------


def settings(environment: str = "production", **auth: Any) -> Settings:
    return Settings(environment=environment, auth=AuthSettings(**auth))


def test_no_key_source_means_no_verifier() -> None:
    assert create_verifier(settings()) is None
    assert create_verifier(settings(hs256_secret=SecretStr(""))) is None


async def test_a_verifier_from_settings_checks_what_the_settings_say() -> None:
    token_verifier = create_verifier(
        settings(hs256_secret=SecretStr(SECRET), issuer=ISSUER, audience=AUDIENCE, leeway_seconds=5)
    )

    assert token_verifier is not None
    assert token_verifier.algorithms == {"RS256", "ES256", "HS256"}
    assert token_verifier.leeway == 5
    assert (await token_verifier.verify(hs256())).subject == "alice"
    await rejected(token_verifier, hs256(iss="https://evil.example"))
    await token_verifier.aclose()


def test_with_only_an_hs256_secret_the_issuer_is_a_claim_to_check_and_no_keys_are_fetched() -> None:
    only_secret = create_verifier(settings(hs256_secret=SecretStr(SECRET), issuer=ISSUER))

    assert only_secret is not None
    assert only_secret.keys is None  # no discovery document, no key set, no readiness check
    assert only_secret.issuer == ISSUER
    assert not create_authenticator(
        settings(hs256_secret=SecretStr(SECRET), issuer=ISSUER)
    ).fetches_keys


BOTH = ["HS256", "RS256"]


@pytest.mark.parametrize(
    ("auth", "discovers"),
    [
        ({"issuer": ISSUER}, True),
        ({"issuer": ISSUER, "hs256_secret": SecretStr(SECRET)}, False),
        ({"issuer": ISSUER, "hs256_secret": SecretStr(SECRET), "algorithms": ["HS256"]}, False),
        ({"issuer": ISSUER, "hs256_secret": SecretStr(SECRET), "algorithms": BOTH}, True),
        ({"issuer": ISSUER, "hs256_secret": SecretStr("")}, True),  # empty: no secret
    ],
    ids=["issuer-only", "with-secret", "hs256-listed", "rs256-listed", "empty-secret"],
)
def test_an_issuer_is_asked_for_keys_only_when_public_keys_are_wanted(
    auth: dict[str, Any], discovers: bool
) -> None:
    token_verifier = create_verifier(settings(**auth))

    assert token_verifier is not None
    assert isinstance(token_verifier.keys, JwksKeySet) is discovers


def test_a_jwks_path_gives_static_keys_and_a_jwks_url_a_fetched_key_set(
    tmp_path: Path, rsa: SigningKey
) -> None:
    path = tmp_path / "key.pem"
    path.write_text(rsa.public_pem())

    from_file = create_verifier(settings(jwks_path=path))
    from_url = create_verifier(settings(jwks_url="https://issuer.example/jwks"))

    assert from_file is not None
    assert isinstance(from_file.keys, StaticKeys)
    assert from_url is not None
    assert isinstance(from_url.keys, JwksKeySet)
    assert from_url.keys.jwks_url == "https://issuer.example/jwks"
    assert from_url.algorithms == {"RS256", "ES256"}


async def test_the_demo_identity_exists_only_in_development() -> None:
    development = create_authenticator(settings("development", demo_user="demo"))
    staging = create_authenticator(settings("staging", demo_user="demo"))

    assert (await development.authenticate(None)).subject == "demo"
    with pytest.raises(AuthenticationError):
        await staging.authenticate(None)


async def test_the_authorizer_uses_the_configured_backend_and_cache(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/authz.db"
    database = create_database(DatabaseSettings(url=SecretStr(url)))
    local = create_authorizer(
        Settings(authz=AuthzSettings(cache_ttl_seconds=60, stale_window_seconds=30)), database
    )
    spicedb = create_authorizer(
        Settings(
            authz=AuthzSettings(
                backend="spicedb",
                spicedb_endpoint="http://127.0.0.1:1",
                spicedb_preshared_key=SecretStr("key"),
                breaker_failure_threshold=2,
            )
        ),
        database,
    )
    try:
        assert isinstance(local, Authorizer)
        assert isinstance(local.backend, LocalBackend)
        assert local.cache.ttl == 60
        assert local.stale_window == 30
        assert isinstance(spicedb.backend, SpiceDBBackend)
        assert spicedb.backend.breaker.failure_threshold == 2
        with pytest.raises(ValueError, match="endpoint"):
            create_authorizer(Settings(authz=AuthzSettings(backend="spicedb")), database)
    finally:
        await spicedb.aclose()
        await database.dispose()


def test_a_verified_tokens_bytes_cover_the_token_and_its_identity_in_memory() -> None:
    # Large tokens with many scopes: a count bound alone would let them fill memory.
    scopes = " ".join(f"scope:{index:04d}" for index in range(480))
    tokens = [hs256(sub=f"user-{index}", scope=scopes).encode() for index in range(50)]
    uncached = TokenVerifier(algorithms=["HS256"], hs256_secret=SECRET, cache_size=0)

    async def verify_all() -> list[tuple[str, Identity]]:
        texts = [token.decode() for token in tokens]  # as a request's header gives it
        return [(text, await uncached.verify(text)) for text in texts]

    loop = asyncio.new_event_loop()  # made before measuring: only the entries are counted
    try:
        kept = loop.run_until_complete(verify_all())
        retained = retained_bytes(lambda: loop.run_until_complete(verify_all()))
    finally:
        loop.close()
    assert retained <= sum(verified_bytes(text, identity) for text, identity in kept)


async def test_the_verified_token_cache_stays_within_its_bytes() -> None:
    scopes = " ".join(f"scope:{index:04d}" for index in range(480))
    checker = TokenVerifier(algorithms=["HS256"], hs256_secret=SECRET, cache_bytes=200_000)
    for index in range(50):
        await checker.verify(hs256(sub=f"user-{index}", scope=scopes))
    assert checker._verified is not None
    assert 0 < len(checker._verified) < 50
    assert checker._verified.size_bytes <= 200_000
