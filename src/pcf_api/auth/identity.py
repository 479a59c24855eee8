"""Who is calling: a verified bearer JWT, or the demo identity in development.

Tokens are checked with PyJWT for signature, ``iss``, ``aud``, ``exp`` and ``nbf`` (with leeway)
under an algorithm allow-list that never contains ``none``. The key is chosen by the
algorithm's family, never by what the key looks like: HMAC tokens verify only with the shared
secret and asymmetric tokens only with public keys bound to their algorithm, so an HS256 token
"signed" with a published RSA key never verifies (RFC 8725 §2.1, algorithm confusion).

Public keys come from a JWKS — a URL, an OIDC issuer's discovery document (``jwks_uri``) or a
local JWKS/PEM file — and are cached by ``kid``. An unknown ``kid`` triggers a refresh, at most
one per interval so forged kids cannot make us hammer the issuer; keys already cached keep
working while the issuer is unreachable.

Failures are AuthenticationError (401 with an RFC 6750 ``WWW-Authenticate`` challenge) whose
description is one of a few fixed sentences: never token content, never library messages.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import jwt
from cachetools import TTLCache
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pcf_api.config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from pcf_api.errors import AppError, ErrorCode
from pcf_api.observability.logging import get_logger
from pcf_api.secretfiles import RotatingSecret, fixed

log = get_logger(__name__)

REALM = "pcf-api"
MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SECONDS = 60.0
NO_KEYS_RETRY_SECONDS = 5.0
MAX_SUBJECT_LENGTH = 100  # notes.author and note_relationships.subject are String(100)
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_DEMO_USER = re.compile(r"[^\s\x00-\x1f\x7f]{1,100}")
_EC_CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

ErrorKind = Literal["invalid_request", "invalid_token"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller. ``subject`` is the user id (the token's ``sub``, or the demo user)."""

    subject: str
    method: Literal["bearer", "demo"]
    issuer: str | None = None
    expires_at: float | None = None
    """Epoch seconds after which the token is no longer valid (subscriptions should end)."""
    scopes: frozenset[str] = frozenset()


class AuthenticationError(AppError):
    """401 UNAUTHORIZED. ``error`` is RFC 6750's code (None when no credentials were sent, as
    the RFC asks); ``description`` is safe to show and is used as the message."""

    def __init__(self, error: ErrorKind | None, description: str) -> None:
        self.error = error
        self.description = description
        challenge = f'Bearer realm="{REALM}"'
        if error is not None:
            challenge += f', error="{error}", error_description="{description}"'
        super().__init__(
            ErrorCode.UNAUTHORIZED, description, headers={"WWW-Authenticate": challenge}
        )


class AuthenticationUnavailable(AppError):
    """503: no signing keys could ever be loaded, so no asymmetric token can be checked."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Token signing keys are temporarily unavailable.",
            headers={"Retry-After": "5"},
        )


def _invalid_token(description: str) -> AuthenticationError:
    return AuthenticationError("invalid_token", description)


# --- Keys -------------------------------------------------------------------------------------


class KeySource(Protocol):
    """Where public keys come from. ``key_for`` raises AuthenticationError when no key fits and
    AuthenticationUnavailable when keys cannot be had at all."""

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def _compatible(jwk: Mapping[str, Any], algorithm: str) -> bool:
    """Whether the JWK can verify ``algorithm`` tokens (its own ``alg`` wins when present)."""
    if jwk.get("use", "sig") != "sig":
        return False
    if "alg" in jwk:
        return bool(jwk["alg"] == algorithm)
    kty = jwk.get("kty")
    if kty == "RSA":
        return algorithm[:2] in ("RS", "PS")
    if kty == "EC":
        return _EC_CURVE_ALGORITHMS.get(str(jwk.get("crv"))) == algorithm
    if kty == "OKP":
        return algorithm == "EdDSA" and jwk.get("crv") in ("Ed25519", "Ed448")
    return False  # "oct" (symmetric) keys are never accepted from a key set


class _KeyRing:
    """A loaded key set: JWK dicts, and the PyJWK built for each (key, algorithm) once."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self._built: dict[tuple[int, str], jwt.PyJWK | None] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def has_kid(self, kid: str) -> bool:
        return any(jwk.get("kid") == kid for jwk in self.keys)

    def select(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The one key that fits; None when none does, or when the token names no kid and
        several keys could fit."""
        candidates = [
            index
            for index, jwk in enumerate(self.keys)
            if (kid is None or jwk.get("kid") == kid) and _compatible(jwk, algorithm)
        ]
        if len(candidates) != 1:
            return None
        slot = (candidates[0], algorithm)
        if slot not in self._built:
            try:
                self._built[slot] = jwt.PyJWK(self.keys[candidates[0]], algorithm)
            except jwt.PyJWTError:
                log.warning(
                    "ignoring an unusable signing key", kid=self.keys[candidates[0]].get("kid")
                )
                self._built[slot] = None
        return self._built[slot]


def parse_key_document(text: str) -> list[dict[str, Any]]:
    """A JWKS (``{"keys": […]}``), a single JWK, or PEM public keys / certificates."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return [_pem_to_jwk(block) for block in _pem_blocks(stripped)]
    document = json.loads(stripped)
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        keys = document["keys"]
    elif isinstance(document, dict) and "kty" in document:
        keys = [document]
    else:
        raise ValueError("not a JWKS, a JWK or PEM")
    return [key for key in keys if isinstance(key, dict)]


def _pem_blocks(text: str) -> list[str]:
    pattern = r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----"
    blocks = [match.group(0) for match in re.finditer(pattern, text, re.DOTALL)]
    if not blocks:
        raise ValueError("no PEM block found")
    return blocks


def _pem_to_jwk(block: str) -> dict[str, Any]:
    data = block.encode()
    if "CERTIFICATE" in block.split("\n", 1)[0]:
        public_key: Any = x509.load_pem_x509_certificate(data).public_key()
    elif "PRIVATE" in block.split("\n", 1)[0]:
        raise ValueError("a private key was given where a public key belongs")
    else:
        public_key = load_pem_public_key(data)
    jwk: dict[str, Any]
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        raise ValueError(f"unsupported public key type {type(public_key).__name__}")
    return jwk


class StaticKeys:
    """Keys from a local JWKS/JWK/PEM file, read once at construction."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self._ring = _KeyRing(keys)

    @classmethod
    def from_file(cls, path: Path) -> StaticKeys:
        return cls(parse_key_document(path.read_text(encoding="utf-8")))

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        key = self._ring.select(kid, algorithm)
        if key is None:
            raise _invalid_token("The token's signing key is unknown.")
        return key

    async def start(self) -> None:
        """Nothing to fetch."""

    async def aclose(self) -> None:
        """Nothing to close."""


class JwksKeySet:
    """Keys from a JWKS URL, or from the ``jwks_uri`` of an OIDC issuer's discovery document.

    Refreshed when a token names an unknown ``kid`` and when the keys are older than
    ``max_age`` — either way at most once per ``min_refresh_interval`` (5 s at most while no
    key was ever loaded). A failed refresh is logged and the cached keys stay in use.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        timeout: float = 5.0,
        min_refresh_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if jwks_url is None and issuer is None:
            raise ValueError("a JWKS URL or an issuer (for OIDC discovery) is required")
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            headers={"Accept": "application/json"},
            transport=transport,
        )
        self._ring: _KeyRing | None = None
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    @property
    def loaded(self) -> bool:
        return self._ring is not None

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The client that fetches discovery documents and keys (for tracing)."""
        return self._client

    async def start(self) -> None:
        """Load the keys once; a failure is logged and retried when a token needs them."""
        await self._refresh()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        if self._ring is None or self._clock() - self._fetched_at >= self.max_age:
            await self._refresh()
        ring = self._ring
        if ring is None:
            raise AuthenticationUnavailable
        key = ring.select(kid, algorithm)
        if key is None and kid is not None and not ring.has_kid(kid):
            await self._refresh()  # perhaps the issuer rotated its keys
            fresh = self._ring
            key = fresh.select(kid, algorithm) if fresh is not None and fresh is not ring else None
        if key is None:
            raise _invalid_token("The token's signing key is unknown.")
        return key

    async def _refresh(self) -> None:
        """Fetch the key set unless a fetch was attempted within the interval."""
        async with self._lock:
            interval = self.min_refresh_interval
            if self._ring is None:
                interval = min(interval, NO_KEYS_RETRY_SECONDS)
            now = self._clock()
            if now - self._attempted_at < interval:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "signing keys could not be fetched; keeping the cached keys",
                    reason=type(exc).__name__,
                    cached_keys=len(self._ring or ()),
                )
                return
            self._ring, self._fetched_at = _KeyRing(keys), now
            log.info("signing keys loaded", keys=len(keys), kids=[key.get("kid") for key in keys])

    async def _fetch(self) -> list[dict[str, Any]]:
        jwks_url = self.jwks_url or await self._discover()
        response = await self._client.get(jwks_url)
        response.raise_for_status()
        return parse_key_document(response.text)

    async def _discover(self) -> str:
        issuer = str(self.issuer)
        response = await self._client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
            raise ValueError("the discovery document has no jwks_uri")
        if document.get("issuer") != issuer:
            raise ValueError("the discovery document names another issuer")
        self.jwks_url = str(document["jwks_uri"])
        return self.jwks_url


# --- Tokens -----------------------------------------------------------------------------------


_FAILURES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet."),
    (jwt.InvalidAudienceError, "The token is not meant for this service."),
    (jwt.InvalidIssuerError, "The token was not issued by a trusted issuer."),
    (jwt.MissingRequiredClaimError, "The token lacks a required claim."),
    (jwt.InvalidAlgorithmError, "The token's signing algorithm is not allowed."),
    (jwt.InvalidSignatureError, "The token's signature is invalid."),
    (jwt.DecodeError, "The token is malformed."),
)


def _describe(exc: jwt.PyJWTError) -> str:
    for kind, description in _FAILURES:
        if isinstance(exc, kind):
            return description
    return "The token is invalid."


class TokenVerifier:
    """Verifies bearer tokens and turns them into identities."""

    def __init__(
        self,
        *,
        algorithms: Collection[str],
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        hs256_secret: str | RotatingSecret | None = None,
        keys: KeySource | None = None,
        cache_size: int = 10_000,
        cache_seconds: float = VERIFIED_CACHE_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        allowed = frozenset(algorithms)
        unsupported = allowed - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS
        if unsupported:
            raise ValueError(f"unsupported algorithms: {sorted(unsupported)}")
        self.algorithms = allowed
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._secret = None if hs256_secret is None else fixed("auth.hs256_secret", hs256_secret)
        self.keys = keys
        self._wall_clock = wall_clock
        # Clients send the same token with every request: remember tokens that verified, for a
        # short while (a removed signing key takes effect within it), so the signature is
        # checked once rather than per request. Expiry is still checked each time.
        self._verified: TTLCache[str, Identity] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_seconds) if cache_size > 0 else None
        )
        if self._secret is not None:
            # A rotated secret takes effect at once: tokens signed with the old one verified
            # earlier must not be accepted from memory.
            self._secret.subscribe(lambda _: self.forget_verified())

    def forget_verified(self) -> None:
        if self._verified is not None:
            self._verified.clear()

    async def start(self) -> None:
        if self.keys is not None:
            await self.keys.start()

    async def aclose(self) -> None:
        if self.keys is not None:
            await self.keys.aclose()

    async def authenticate(self, authorization: str) -> Identity:
        """Verify an ``Authorization`` header value."""
        return await self.verify(bearer_token(authorization))

    async def verify(self, token: str) -> Identity:
        if self._verified is not None:
            identity = self._verified.get(token)
            if identity is not None:
                if float(identity.expires_at or 0) + self.leeway > self._wall_clock():
                    return identity
                raise _invalid_token("The token has expired.")
        identity = await self._verify(token)
        if self._verified is not None:
            self._verified[token] = identity
        return identity

    async def _verify(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid_token("The token is too large.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid_token("The token is malformed.") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise _invalid_token("The token's signing algorithm is not allowed.")
        key = await self._key(header, algorithm)
        required = ["exp", "sub"] + ["iss"] * bool(self.issuer) + ["aud"] * bool(self.audience)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise _invalid_token(_describe(exc)) from None
        return _identity(claims)

    async def _key(self, header: Mapping[str, Any], algorithm: str) -> jwt.PyJWK | str:
        if algorithm in HMAC_ALGORITHMS:
            if self._secret is None:
                raise _invalid_token("The token's signing algorithm is not allowed.")
            return self._secret.value
        if self.keys is None:
            raise _invalid_token("The token's signing algorithm is not allowed.")
        kid = header.get("kid")
        return await self.keys.key_for(kid if isinstance(kid, str) else None, algorithm)


def _identity(claims: Mapping[str, Any]) -> Identity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise _invalid_token("The token lacks a required claim.")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise _invalid_token("The token's subject is too long.")
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else []
    issuer = claims.get("iss")
    return Identity(
        subject=subject,
        method="bearer",
        issuer=issuer if isinstance(issuer, str) else None,
        expires_at=float(claims["exp"]),
        scopes=frozenset(str(item) for item in scopes),
    )


def bearer_token(authorization: str) -> str:
    """The token of ``Bearer <token>``; anything else is invalid_request."""
    match = _BEARER.fullmatch(authorization.strip())
    if match is None:
        raise AuthenticationError(
            "invalid_request", "The Authorization header must be 'Bearer <token>'."
        )
    return match.group(1)


# --- The caller of a request ------------------------------------------------------------------


class Authenticator:
    """Resolves the caller: a bearer token when one is sent; otherwise, only when a demo user is
    configured (development), the ``X-Demo-User`` header's user or the demo user."""

    def __init__(self, verifier: TokenVerifier | None, *, demo_user: str | None = None) -> None:
        self.verifier = verifier
        self.demo_user = demo_user

    async def start(self) -> None:
        if self.verifier is not None:
            await self.verifier.start()

    @property
    def http_client(self) -> httpx.AsyncClient | None:
        """The client that talks to the issuer, when keys come from one (for tracing)."""
        keys = self.verifier.keys if self.verifier is not None else None
        return keys.http_client if isinstance(keys, JwksKeySet) else None

    @property
    def fetches_keys(self) -> bool:
        """Whether signing keys come from an issuer over the network (and can be missing)."""
        return self.verifier is not None and isinstance(self.verifier.keys, JwksKeySet)

    async def check_keys(self) -> None:
        """Health check: the issuer's signing keys are loaded (a load is retried here, within
        the refresh limits). Without them every bearer token is answered 503."""
        keys = self.verifier.keys if self.verifier is not None else None
        if isinstance(keys, JwksKeySet) and not keys.loaded:
            await keys.start()
            if not keys.loaded:
                raise AuthenticationUnavailable

    async def aclose(self) -> None:
        if self.verifier is not None:
            await self.verifier.aclose()

    async def authenticate(
        self, authorization: str | None, demo_user_header: str | None = None
    ) -> Identity:
        if authorization:
            if self.verifier is None:
                raise _invalid_token("Bearer tokens are not accepted: no signing keys are set.")
            return await self.verifier.authenticate(authorization)
        if self.demo_user is None:
            raise AuthenticationError(None, "Authentication is required.")
        if demo_user_header is None:
            return Identity(subject=self.demo_user, method="demo")
        if not _DEMO_USER.fullmatch(demo_user_header):
            raise AuthenticationError(
                "invalid_request", "X-Demo-User must be 1 to 100 visible characters."
            )
        return Identity(subject=demo_user_header, method="demo")
