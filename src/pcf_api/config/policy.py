"""The safety policy: settings that validate but must not run, together or outside development.

Kept apart from the schema because these rules look across sections and at the environment, and
their messages name where the offending value came from.
"""

from __future__ import annotations

from collections.abc import Mapping

from pcf_api.config.provenance import Source
from pcf_api.config.schema import Settings

# Values that ship in examples and tutorials; a deployment using one has no secret at all.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "password", "development-only-secret"}
)
MIN_SECRET_LENGTH = 32

PRODUCTION_CACHE_TTL_SECONDS = 300.0


def inconsistent_settings(settings: Settings) -> list[str]:
    """Combinations that cannot work in any environment."""
    problems: list[str] = []
    authz = settings.authz
    if authz.backend == "spicedb":
        if not authz.spicedb_endpoint:
            problems.append("authz.spicedb_endpoint: required when authz.backend is spicedb")
        key = authz.spicedb_preshared_key
        if key is None or not key.get_secret_value():
            problems.append(
                "authz.spicedb_preshared_key: required when authz.backend is spicedb "
                "(set PCF_AUTHZ__SPICEDB_PRESHARED_KEY or PCF_AUTHZ__SPICEDB_PRESHARED_KEY_FILE)"
            )
    if settings.auth.jwks_url and settings.auth.jwks_path:
        problems.append("auth.jwks_url and auth.jwks_path: set only one of them")
    cors = settings.cors
    if cors.allow_credentials and ("*" in cors.allow_origins or cors.allow_origin_regex == ".*"):
        problems.append(
            "cors.allow_origins: '*' together with cors.allow_credentials would let any site "
            "make credentialed calls; list the origins instead"
        )
    if settings.graphql.only_trusted_documents and settings.graphql.trusted_documents is None:
        problems.append(
            "graphql.only_trusted_documents: needs graphql.trusted_documents (the manifest)"
        )
    return problems


def unsafe_settings(settings: Settings, sources: Mapping[str, Source]) -> list[str]:
    """Settings that are acceptable on a laptop and dangerous anywhere else."""
    if settings.is_development:
        return []

    def where(key: str) -> str:
        return str(sources.get(key, Source("default")))

    env = settings.environment
    problems: list[str] = []
    if settings.auth.demo_user:
        problems.append(
            f"auth.demo_user ({where('auth.demo_user')}): demo identity is refused in {env}"
        )
    if settings.database.url is None or not settings.database.url.get_secret_value():
        problems.append(
            f"database.url: required in {env} (set PCF_DATABASE__URL or PCF_DATABASE__URL_FILE)"
        )
    secret = settings.auth.hs256_secret
    if secret is not None:
        value = secret.get_secret_value()
        if value.strip().lower() in KNOWN_DEFAULT_SECRETS or len(value) < MIN_SECRET_LENGTH:
            problems.append(
                f"auth.hs256_secret ({where('auth.hs256_secret')}): empty, default or shorter than "
                f"{MIN_SECRET_LENGTH} characters; refused in {env}"
            )
    if env == "production" and settings.authz.cache_ttl_seconds != PRODUCTION_CACHE_TTL_SECONDS:
        problems.append(
            f"authz.cache_ttl_seconds ({where('authz.cache_ttl_seconds')}): fixed at "
            f"{PRODUCTION_CACHE_TTL_SECONDS:g} in production"
        )
    if settings.testing.delay_seconds > 0:
        problems.append(
            f"testing.delay_seconds ({where('testing.delay_seconds')}): "
            f"fault injection is refused in {env}"
        )
    for key in ("graphql.introspection", "graphql.graphiql"):
        section, name = key.split(".")
        if getattr(getattr(settings, section), name):
            problems.append(
                f"{key} ({where(key)}): schema introspection without identity is refused in {env}"
            )
    return problems
