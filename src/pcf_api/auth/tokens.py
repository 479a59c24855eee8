"""Who is calling: a verified bearer JWT, or the demo identity in development.

Tokens are checked with PyJWT for signature, ``iss``, ``aud``, ``exp`` and ``nbf`` (with leeway)
under an algorithm allow-list that never contains ``none``. The key is chosen by the
algorithm's family, never by what the key looks like: HMAC tokens verify only with the shared
secret and asymmetric tokens only with public keys bound to their algorithm (from a
``KeySource``), so an HS256 token "signed" with a published RSA key never verifies (RFC 8725
§2.1, algorithm confusion).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt

from pcf_api.auth.errors import AuthenticationError, AuthenticationUnavailable, invalid_token
from pcf_api.auth.keys import JwksKeySet, KeySource
from pcf_api.config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from pcf_api.secretfiles import RotatingSecret, fixed
from pcf_api.sizing import BytesCache, text_bytes
from pcf_api.text import unstorable

MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SECONDS = 60.0
IDENTITY_BYTES = 512
"""A verified token's memory beyond its strings and objects: allocation rounding of its many
small strings (measured with tracemalloc, rounded up)."""
MAX_SUBJECT_LENGTH = 100  # notes.author and note_relationships.subject are String(100)
# NumericDate claims (RFC 7519 §2): seconds since 1970 as a JSON number. PyJWT reads them with
# int(), which also takes a numeric string and 1e300 (a token that never expires); a time after
# 9999-12-31T23:59:59Z is no time.
TIME_CLAIMS = ("exp", "nbf", "iat")
LATEST_TIME = 253_402_300_799
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_DEMO_USER = re.compile(r"[^\s\x00-\x1f\x7f]{1,100}")


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller. ``subject`` is the user id (the token's ``sub``, or the demo user)."""

    subject: str
    method: Literal["bearer", "demo"]
    issuer: str | None = None
    expires_at: float | None = None
    """Epoch seconds after which the token is no longer valid (subscriptions should end)."""
    scopes: frozenset[str] = frozenset()


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
        cache_bytes: int = 8 * 1_048_576,
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
        # checked once rather than per request. Expiry is still checked each time. Bounded in
        # bytes as well as in count: a token can be large, and its identity carries its scopes.
        verified: BytesCache[str, Identity] = BytesCache(
            max_bytes=cache_bytes,
            max_entries=cache_size,
            ttl=cache_seconds,
            size_of=verified_bytes,
        )
        self._verified = verified if verified.enabled else None
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
                raise invalid_token("The token has expired.")
        identity = await self._verify(token)
        if self._verified is not None:
            self._verified.put(token, identity)
        return identity

    async def _verify(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid_token("The token is too large.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_token("The token is malformed.") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise invalid_token("The token's signing algorithm is not allowed.")
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
            raise invalid_token(_describe(exc)) from None
        return _identity(claims)

    async def _key(self, header: Mapping[str, Any], algorithm: str) -> jwt.PyJWK | str:
        if algorithm in HMAC_ALGORITHMS:
            if self._secret is None:
                raise invalid_token("The token's signing algorithm is not allowed.")
            return self._secret.value
        if self.keys is None:
            raise invalid_token("The token's signing algorithm is not allowed.")
        kid = header.get("kid")
        return await self.keys.key_for(kid if isinstance(kid, str) else None, algorithm)


def verified_bytes(token: str, identity: Identity) -> int:
    """A verified token's memory in the cache: the token and its identity with every string."""
    texts = [token, identity.subject, *identity.scopes]
    if identity.issuer is not None:
        texts.append(identity.issuer)
    return (
        IDENTITY_BYTES
        + sys.getsizeof(identity)
        + sys.getsizeof(identity.expires_at)
        + sys.getsizeof(identity.scopes)
        + sum(text_bytes(text) for text in texts)
    )


def _identity(claims: Mapping[str, Any]) -> Identity:
    for name in TIME_CLAIMS:
        if name in claims and not _is_time(claims[name]):
            raise invalid_token(
                f"The token's {name} claim must be a number of seconds since 1970, "
                "before the year 10000."
            )
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise invalid_token("The token lacks a required claim.")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise invalid_token("The token's subject is too long.")
    if unstorable(subject) is not None:
        raise invalid_token(
            "The token's subject must be Unicode text without NUL characters or lone surrogates."
        )
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


def _is_time(value: object) -> bool:
    """Whether a claim is a NumericDate: a JSON number, not a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= LATEST_TIME  # NaN compares false, infinities are out of range


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
                raise invalid_token("Bearer tokens are not accepted: no signing keys are set.")
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
