"""The settings schema: one frozen pydantic model per section, validated as a whole.

Which keys exist and which of them hold secrets is derived from these models, so the loader,
log redaction and ``pcf-api config show`` never keep a list of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

import limits
from pydantic import (
    BaseModel,
    ConfigDict,
    DirectoryPath,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

Environment = Literal["development", "staging", "production"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

FILE_SUFFIX = "_file"

_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def _normalise_level(value: Any) -> Any:
    if isinstance(value, str):
        upper = value.strip().upper()
        return _LEVEL_ALIASES.get(upper, upper)
    return value


def _split_list(value: Any) -> Any:
    """Environment variables carry lists as comma-separated text."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    drain_seconds: float = Field(5.0, ge=0, le=300)
    shutdown_timeout: float = Field(30.0, gt=0, le=600)
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    request_timeout_seconds: float = Field(30.0, gt=0, le=600)
    gc_young_threshold: int = Field(10_000, ge=0, le=1_000_000)
    max_header_line_bytes: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        description="longest request line (414) or single header (431) accepted",
    )
    max_header_bytes: int = Field(
        65_536,
        ge=1024,
        le=4 * 1_048_576,
        description="most bytes of request line and headers together (431)",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a request's line and headers must arrive within this of its first byte (408)",
    )
    idle_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="a connection with no request in progress is closed after this much silence",
    )
    max_connections: int = Field(
        1500,
        ge=1,
        le=100_000,
        description="open HTTP and WebSocket connections; one more is answered 503 and closed",
    )

    @model_validator(mode="after")
    def _header_line_within_head(self) -> ServerSettings:
        if self.max_header_line_bytes > self.max_header_bytes:
            raise ValueError("max_header_line_bytes must not exceed max_header_bytes")
        return self


class LogSettings(Section):
    """Log output and what it may say. The defaults are production's: a laptop gets full
    addresses, raw subjects and tracebacks from the development profile."""

    level: LogLevel = "INFO"
    format: LogFormat = "json"
    levels: dict[str, LogLevel] = Field(default_factory=dict)
    buffer_lines: int = Field(10_000, ge=100, le=1_000_000)
    """Lines waiting for stdout at most; past it DEBUG and INFO are dropped first (counted)."""
    client_ip: Literal["full", "subnet", "hash", "none"] = "subnet"
    """The access line's client address: as is, its IPv4 /24 or IPv6 /48, a keyed hash, or left
    out."""
    subject: Literal["raw", "hash"] = "hash"
    """The access line's caller: as is, or a keyed hash (``hash_key``) that still correlates."""
    audit_subject: Literal["raw", "hash"] = "hash"
    """The same choice for the audit line (one per authorization decision)."""
    hash_key: SecretStr | None = None
    """The HMAC key of hashed subjects and addresses; unset: a random key per process."""
    hash_key_file: Path | None = None
    tracebacks: bool = False
    """Unexpected errors carry their traceback; without, only type, fingerprint and trace id."""
    scrub: list[Literal["email", "card"]] = ["email", "card"]
    """Built-in patterns replaced in every line: e-mail addresses, card numbers (Luhn-checked)."""
    scrub_patterns: list[str] = []
    """More regular expressions to replace; in the environment one per line."""

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return _normalise_level(value)

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in _split_list(value)]
            if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
                raise ValueError("expected comma-separated name=LEVEL pairs")
            value = {name.strip(): level for name, level in pairs}
        if isinstance(value, Mapping):
            return {name: _normalise_level(level) for name, level in value.items()}
        return value

    @field_validator("scrub", mode="before")
    @classmethod
    def _scrub(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("scrub_patterns", mode="before")
    @classmethod
    def _patterns_lines(cls, value: Any) -> Any:
        if isinstance(value, str):  # regular expressions hold commas: one per line
            return [line for line in value.splitlines() if line.strip()]
        return value

    @field_validator("scrub_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
        return value


class HealthSettings(Section):
    check_interval_seconds: float = Field(5.0, gt=0, le=300)
    check_timeout_seconds: float = Field(2.0, gt=0, le=4.5)
    warn_interval_seconds: float = Field(30.0, gt=0)


class DatabaseSettings(Section):
    url: SecretStr | None = None
    url_file: Path | None = None
    # Replaces the password in ``url`` (a file of its own is easier to rotate than a URL).
    password: SecretStr | None = None
    password_file: Path | None = None
    pool_size: int = Field(20, ge=1, le=200)
    max_overflow: int = Field(0, ge=0, le=200)
    pool_timeout_seconds: float = Field(5.0, gt=0, le=60)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    statement_timeout_seconds: float = Field(20.0, gt=0, le=300)
    retry_initial_seconds: float = Field(1.0, gt=0, le=60)
    retry_max_seconds: float = Field(60.0, gt=0, le=600)
    auto_migrate: bool = False
    read_cache_size: int = Field(10_000, ge=0)
    read_cache_bytes: int = Field(64 * 1_048_576, ge=0)
    """What the cache of recently read notes (served during an outage) may hold, in bytes of
    memory as estimated per note; the count bound ``read_cache_size`` applies too. 0: off."""
    write_queue_size: int = Field(1000, ge=0)
    write_wait_seconds: float = Field(20.0, ge=0, le=300)
    unavailable_after_seconds: float = Field(30.0, ge=0)


class GraphQLSettings(Section):
    max_depth: int = Field(15, ge=1, le=50)
    max_complexity: int = Field(1000, ge=1)
    max_aliases: int = Field(10, ge=0)
    max_tokens: int = Field(2000, ge=10)
    max_document_bytes: int = Field(100_000, ge=100)
    document_cache_size: int = Field(1000, ge=0)
    document_cache_bytes: int = Field(32 * 1_048_576, ge=0)
    """What the cache of parsed and validated documents may hold, in bytes of memory (query
    text and syntax tree, estimated); the count bound ``document_cache_size`` applies too."""
    introspection: bool = False
    graphiql: bool = False
    graphiql_assets_url: str = Field("https://unpkg.com", pattern=r"^(https?://|/)")
    """Where the GraphiQL page loads React and GraphiQL from: a CDN or a mirror with unpkg's
    layout (``<base>/graphiql@<version>/graphiql.min.js``) that sends CORS headers."""
    graphiql_assets_dir: DirectoryPath | None = None
    """A directory in that layout, served by pcf-api itself at ``/graphiql/assets`` and used
    instead of ``graphiql_assets_url``: GraphiQL without internet (docs/api.md, GraphiQL)."""
    execution_timeout_seconds: float = Field(25.0, gt=0, le=300)
    max_subscriptions: int = Field(1000, ge=0)
    max_subscriptions_per_client: int = Field(10, ge=0)
    subscription_idle_timeout_seconds: float = Field(1800.0, gt=0)
    persisted_queries: bool = True
    """Automatic persisted queries (Apollo's ``extensions.persistedQuery``)."""
    persisted_queries_max_bytes: int = Field(16 * 1_048_576, ge=0)
    """What the in-process store of registered documents may hold, in bytes of document text."""
    persisted_queries_redis_url: SecretStr | None = None
    """A Redis shared by every replica for registered documents (in process when unset)."""
    persisted_queries_redis_url_file: Path | None = None
    persisted_queries_redis_timeout_seconds: float = Field(0.25, gt=0, le=5)
    """The longest a request waits for that Redis (connect, or one command) before it is
    treated as a miss; far below the request deadline."""
    trusted_documents: Path | None = None
    """A manifest of the documents the service's own apps ship (hash → document), e.g. a
    ConfigMap written by GraphQL Code Generator's client preset or the Relay compiler."""
    only_trusted_documents: bool = False
    """Refuse every document that is not in ``trusted_documents`` (before parsing)."""


class CorsSettings(Section):
    """Which browser origins may call the API (Starlette's CORSMiddleware) and open its
    WebSocket. Requests without an ``Origin`` header (servers, mobile apps) are not affected."""

    allow_origins: list[str] = []
    """Exact origins (``https://app.example.com``); comma-separated in the environment."""
    allow_origin_regex: str | None = None
    allow_credentials: bool = False
    max_age: int = Field(600, ge=0, le=86_400)
    """How long a browser may cache a preflight answer, in seconds."""

    @field_validator("allow_origins", mode="before")
    @classmethod
    def _origins_list(cls, value: Any) -> Any:
        return _split_list(value) or []


class SubscriptionsSettings(Section):
    connection_init_timeout: float = Field(10.0, gt=0, le=300)
    """Seconds a WebSocket client has to send ``connection_init`` before it is closed (4408)."""
    queue_events: int = Field(256, ge=1, le=100_000)
    """Events one subscription may have waiting for its client; past that (or past
    ``queue_bytes``) it ends with SUBSCRIBER_TOO_SLOW."""
    queue_bytes: int = Field(1_048_576, ge=1_048_576, le=64 * 1_048_576)
    """Bytes of event JSON one subscription may have waiting; at least 1 MiB, the largest event."""
    authorization_concurrency: int = Field(2, ge=1, le=50)
    """Bulk authorization lookups for event fan-out running at once (one per event, for all
    its subscribers); on the local backend each holds one connection of the request pool."""


class EventsSettings(Section):
    backend: Literal["auto", "memory", "postgres", "redis"] = "auto"
    redis_url: SecretStr | None = None
    redis_url_file: Path | None = None
    redis_timeout_seconds: float = Field(1.0, gt=0, le=5)
    """The longest any wait for the events Redis lasts (connect, publish, a probe's answer): a
    mutation's publish never waits longer, and a Redis gone silent is noticed within two."""


# Signing algorithms a bearer token may use. ``none`` is never one of them.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


class AuthSettings(Section):
    """Bearer-token verification. Keys come from ``hs256_secret``, ``jwks_path``, ``jwks_url``
    or, when neither of the last two is set, the OIDC discovery document of ``issuer``."""

    hs256_secret: SecretStr | None = None
    hs256_secret_file: Path | None = None
    jwks_url: str | None = None
    jwks_path: Path | None = None  # not `_file`: that suffix means "the secret x read from a file"
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] | None = None
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    jwks_refresh_min_interval_seconds: float = Field(60.0, ge=0, le=3600)
    jwks_max_age_seconds: float = Field(3600.0, gt=0, le=86400)
    http_timeout_seconds: float = Field(5.0, gt=0, le=60)
    token_cache_bytes: int = Field(8 * 1_048_576, ge=0)
    """What the cache of recently verified bearer tokens may hold, in bytes of memory (the
    token and its identity, estimated). 0: every request verifies its token's signature."""
    demo_user: str | None = None

    @field_validator("algorithms", mode="before")
    @classmethod
    def _algorithms_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            supported = ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS
            unknown = [name for name in value if name not in supported]
            if unknown:
                allowed = ", ".join(sorted(supported))
                raise ValueError(f"unsupported algorithm(s) {unknown} (allowed: {allowed})")
            if not value:
                raise ValueError("at least one algorithm is required")
            value = list(dict.fromkeys(value))
        return value

    def allowed_algorithms(self) -> frozenset[str]:
        """The configured list, or RS256 and ES256 plus HS256 when a shared secret is set."""
        if self.algorithms is not None:
            return frozenset(self.algorithms)
        defaults = {"RS256", "ES256"}
        if self.hs256_secret is not None:
            defaults.add("HS256")
        return frozenset(defaults)


class AuthzSettings(Section):
    """Authorization decisions: the backend, the decision cache and the SpiceDB client."""

    backend: Literal["local", "spicedb"] = "local"
    cache_ttl_seconds: float = Field(300.0, ge=0, le=3600)
    cache_size: int = Field(100_000, ge=0, le=10_000_000)
    cache_bytes: int = Field(32 * 1_048_576, ge=0)
    """What the decision cache may hold, in bytes of memory (subject, resource and answer,
    estimated); the count bound ``cache_size`` applies too."""
    stale_window_seconds: float = Field(300.0, ge=0, le=3600)
    spicedb_endpoint: str | None = None
    spicedb_preshared_key: SecretStr | None = None
    spicedb_preshared_key_file: Path | None = None
    spicedb_timeout_seconds: float = Field(2.0, gt=0, le=60)
    spicedb_fully_consistent: bool = False
    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    breaker_reset_seconds: float = Field(10.0, gt=0, le=600)

    @field_validator("spicedb_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("expected an http:// or https:// URL")
        return value


RATE_LIMIT_STORAGE_SCHEMES = frozenset(
    {"memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"}
)


class RateLimitSettings(Section):
    """Per-client request budgets in the ``limits`` notation (``1000/minute``, ``10 per second``).
    ``storage_url`` unset keeps the counters in process; a Redis URL shares them."""

    enabled: bool = True
    queries: str = "1000/minute"
    mutations: str = "100/minute"
    subscriptions: str = "10/minute"
    search: str = "10/minute"
    storage_url: SecretStr | None = None
    storage_url_file: Path | None = None
    storage_timeout_seconds: float = Field(0.25, gt=0, le=5)
    """The longest a request waits for the shared storage (connect, or one command) before its
    budgets are counted in process instead; far below the request deadline."""

    @field_validator("queries", "mutations", "subscriptions", "search")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            limits.parse_many(value)
        except ValueError:
            raise ValueError("expected a rate such as '100/minute' or '10 per second'") from None
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().partition("://")[0]
            if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
                schemes = ", ".join(f"{name}://" for name in sorted(RATE_LIMIT_STORAGE_SCHEMES))
                raise ValueError(f"expected one of {schemes}")
        return value


class MetricsSettings(Section):
    enabled: bool = True
    port: int | None = Field(None, ge=1, le=65535)
    username: str = Field("prometheus", min_length=1, max_length=100)
    password: SecretStr | None = None
    password_file: Path | None = None
    field_timing: bool = False


class TracingSettings(Section):
    """OpenTelemetry traces over OTLP/HTTP; off unless enabled."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    headers: SecretStr | None = None
    headers_file: Path | None = None
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    service_name: str = Field("pcf-api", min_length=1, max_length=100)
    export_interval_seconds: float = Field(5.0, gt=0, le=60)
    export_timeout_seconds: float = Field(10.0, gt=0, le=60)


class SecretsSettings(Section):
    """Secrets read from files (``x_file``) are checked for changes this often; 0: never."""

    reload_interval_seconds: float = Field(10.0, ge=0, le=3600)


class TestingSettings(Section):
    """Fault injection for the test suite; refused outside development."""

    delay_seconds: float = Field(0.0, ge=0, le=60)
    delay_paths: list[str] = Field(default_factory=list)

    @field_validator("delay_paths", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _split_list(value)


class Settings(Section):
    environment: Environment = "production"
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    health: HealthSettings = HealthSettings()
    database: DatabaseSettings = DatabaseSettings()
    graphql: GraphQLSettings = GraphQLSettings()
    cors: CorsSettings = CorsSettings()
    subscriptions: SubscriptionsSettings = SubscriptionsSettings()
    events: EventsSettings = EventsSettings()
    auth: AuthSettings = AuthSettings()
    authz: AuthzSettings = AuthzSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    secrets: SecretsSettings = SecretsSettings()
    testing: TestingSettings = TestingSettings()

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    def secret_values(self) -> list[str]:
        """Every configured secret, for log redaction. Includes the database password alone."""
        values: list[str] = []
        for key, secret in _secret_fields(self):
            values.extend(redaction_forms(key, secret.get_secret_value()))
        return values

    def secret_items(self) -> dict[str, str]:
        """Every configured secret's value, by key (``database.url``, ``auth.hs256_secret``, …)."""
        return {key: secret.get_secret_value() for key, secret in _secret_fields(self)}

    def secret_files(self) -> dict[str, Path]:
        """The secrets that were read from a file (``x_file``), by key, with that file."""
        files: dict[str, Path] = {}
        for key, _ in _secret_fields(self):
            section, name = key.split(".")
            path = getattr(getattr(self, section), name + FILE_SUFFIX, None)
            if isinstance(path, Path):
                files[key] = path
        return files


def redaction_forms(key: str, value: str) -> list[str]:
    """What log redaction must scrub for the secret ``key`` holding ``value``: the value, and for
    a URL also the password inside it (the driver logs it apart from the URL)."""
    values = [value]
    if key.endswith("_url") or key.endswith(".url"):
        try:
            password = urlsplit(value).password
        except ValueError:  # not parseable as a URL; the whole value is still listed
            password = None
        if password:
            # As written in the URL (percent-encoded) and as the driver will use it.
            values.extend(dict.fromkeys([password, unquote(password)]))
    return [item for item in values if item]


@cache
def known_keys() -> dict[str, bool]:
    """Every settable dotted key, mapped to whether it holds a secret."""
    keys: dict[str, bool] = {"environment": False}
    for section_name, field in Settings.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, Section)):
            continue
        for name, sub in section.model_fields.items():
            keys[f"{section_name}.{name}"] = _is_secret(sub.annotation)
    return keys


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _secret_fields(settings: Settings) -> Iterable[tuple[str, SecretStr]]:
    for key, secret in known_keys().items():
        if not secret:
            continue
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        if value is not None:
            yield key, value
