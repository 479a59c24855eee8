"""HS256 tokens minted from the configured shared secret, for ``pcf-api token``.

A developer or a test cluster has no identity provider; the service already trusts its HS256
secret, so a token signed with it (and carrying the configured issuer and audience) is exactly
what the service accepts. The claims are the ones ``tokens.TokenVerifier`` requires.
"""

from __future__ import annotations

import re
import time

import jwt

from pcf_api.auth.tokens import MAX_SUBJECT_LENGTH
from pcf_api.config import AuthSettings

MAX_TTL_SECONDS = 7 * 86_400
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class MintError(Exception):
    """A token cannot be minted; the message says why and what would work."""


def parse_duration(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h`` or ``2d``."""
    match = _DURATION.fullmatch(text.strip())
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise MintError(
            f"The lifetime {text!r} is not allowed: give a positive number of seconds, minutes, "
            f"hours or days (90s, 15m, 1h, 2d), at most {MAX_TTL_SECONDS // 86_400} days."
        )
    return seconds


def mint_hs256(
    auth: AuthSettings, subject: str, ttl_seconds: int, *, now: float | None = None
) -> str:
    """A token for ``subject`` valid ``ttl_seconds``, signed with ``auth.hs256_secret``."""
    if not subject.strip() or len(subject) > MAX_SUBJECT_LENGTH:
        raise MintError(
            f"The subject {subject!r} is not allowed: give 1 to {MAX_SUBJECT_LENGTH} characters, "
            "not all blank."
        )
    if auth.hs256_secret is None:
        raise MintError(
            "No HS256 secret is configured: set auth.hs256_secret_file "
            "(PCF_AUTH__HS256_SECRET_FILE) or auth.hs256_secret (PCF_AUTH__HS256_SECRET)."
        )
    if "HS256" not in auth.allowed_algorithms():
        raise MintError(
            "HS256 is not among auth.algorithms, so the service would refuse the token: "
            "add HS256 to auth.algorithms or leave it unset."
        )
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": subject, "iat": issued, "exp": issued + ttl_seconds}
    if auth.issuer:
        claims["iss"] = auth.issuer
    if auth.audience:
        claims["aud"] = auth.audience
    return jwt.encode(claims, auth.hs256_secret.get_secret_value(), algorithm="HS256")
