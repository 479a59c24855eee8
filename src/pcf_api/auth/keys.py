"""Where public signing keys come from: a local JWKS/JWK/PEM file, or a JWKS fetched from a URL
or found through an OIDC issuer's discovery document (``jwks_uri``).

Keys are cached by ``kid``. An unknown ``kid`` triggers a refresh, at most one per interval so
forged kids cannot make us hammer the issuer; keys already cached keep working while the issuer
is unreachable. A key from a set fits an algorithm only when its type (or its own ``alg``) says
so, and symmetric ("oct") keys are never taken from a set.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pcf_api.auth.errors import AuthenticationUnavailable, invalid_token

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

NO_KEYS_RETRY_SECONDS = 5.0
_EC_CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


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
            raise invalid_token("The token's signing key is unknown.")
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
            raise invalid_token("The token's signing key is unknown.")
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
