"""Build the identity and authorization components from settings.

Each returned object owns its HTTP clients: call ``await x.start()`` (authenticator) during
start-up and ``await x.aclose()`` at shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pcf_api.auth.authorizer import Authorizer, DecisionCache
from pcf_api.auth.identity import (
    Authenticator,
    JwksKeySet,
    KeySource,
    StaticKeys,
    TokenVerifier,
)
from pcf_api.auth.local import LocalBackend
from pcf_api.auth.policy import AuthorizationBackend
from pcf_api.auth.spicedb import SpiceDBBackend
from pcf_api.config import Settings
from pcf_api.secretfiles import SecretFiles
from pcf_api.store.database import Database


def create_verifier(settings: Settings, secrets: SecretFiles | None = None) -> TokenVerifier | None:
    """A verifier for the configured key sources; None when none is configured (then every
    bearer token is refused). Keys: ``auth.jwks_path`` (read now; OSError/ValueError when
    unusable), else ``auth.jwks_url``, else discovery from ``auth.issuer``; plus the HS256
    secret when set (from ``secrets``, so that a rotated one takes effect)."""
    auth = settings.auth
    secrets = secrets or SecretFiles.from_settings(settings)
    keys: KeySource | None = None
    if auth.jwks_path is not None:
        keys = StaticKeys.from_file(auth.jwks_path)
    elif auth.jwks_url or auth.issuer:
        keys = JwksKeySet(
            jwks_url=auth.jwks_url,
            issuer=auth.issuer,
            timeout=auth.http_timeout_seconds,
            min_refresh_interval=auth.jwks_refresh_min_interval_seconds,
            max_age=auth.jwks_max_age_seconds,
        )
    secret = secrets.get("auth.hs256_secret")
    if secret is not None and not secret.value:
        secret = None  # empty: no HS256 secret (development; refused elsewhere)
    if keys is None and secret is None:
        return None
    return TokenVerifier(
        algorithms=auth.allowed_algorithms(),
        issuer=auth.issuer,
        audience=auth.audience,
        leeway=auth.leeway_seconds,
        hs256_secret=secret,
        keys=keys,
    )


def create_authenticator(settings: Settings, secrets: SecretFiles | None = None) -> Authenticator:
    """Bearer tokens always; the demo identity only in development (production and staging
    already refuse to start with ``auth.demo_user`` set)."""
    demo_user = settings.auth.demo_user if settings.is_development else None
    return Authenticator(create_verifier(settings, secrets), demo_user=demo_user or None)


def create_authorizer(
    settings: Settings,
    database: Database,
    *,
    clock: Callable[[], float] = time.monotonic,
    secrets: SecretFiles | None = None,
) -> Authorizer:
    """The configured backend behind the decision cache and the outage rule."""
    authz = settings.authz
    backend: AuthorizationBackend
    if authz.backend == "spicedb":
        key = (secrets or SecretFiles.from_settings(settings)).get("authz.spicedb_preshared_key")
        if authz.spicedb_endpoint is None or key is None:
            raise ValueError("authz.backend = spicedb needs an endpoint and a pre-shared key")
        backend = SpiceDBBackend(
            authz.spicedb_endpoint,
            key,
            timeout=authz.spicedb_timeout_seconds,
            fully_consistent=authz.spicedb_fully_consistent,
            failure_threshold=authz.breaker_failure_threshold,
            reset_timeout=authz.breaker_reset_seconds,
            clock=clock,
        )
    else:
        backend = LocalBackend(database)
    cache = DecisionCache(
        ttl=authz.cache_ttl_seconds,
        maxsize=authz.cache_size,
        stale_window=authz.stale_window_seconds,
        clock=clock,
    )
    return Authorizer(backend, cache=cache, stale_window=authz.stale_window_seconds, clock=clock)
