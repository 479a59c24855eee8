"""Settings: defaults → profile → TOML → environment → CLI flags; each value remembers its layer.

pydantic validates the merged result. The layers are read here rather than through
pydantic-settings' sources because those merge without recording which layer supplied each
value, and both validation errors and ``pcf-api config show`` must name it.

Every secret ``x`` may also be given as ``x_file``: a path whose content is the value (a mounted
Kubernetes Secret or a Vault Agent file). Files are read here, at start-up, so that a missing or
unreadable one stops the process; while it runs, ``pcf_api.secretfiles`` re-reads them when they
change.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

import limits
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

Environment = Literal["development", "staging", "production"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

ENV_PREFIX = "PCF_"
CONFIG_FILE_ENV = "PCF_CONFIG"
FILE_SUFFIX = "_file"

# Values that ship in examples and tutorials; a deployment using one has no secret at all.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "password", "development-only-secret"}
)
MIN_SECRET_LENGTH = 32

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


class LogSettings(Section):
    level: LogLevel = "INFO"
    format: LogFormat = "json"
    levels: dict[str, LogLevel] = Field(default_factory=dict)

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
    introspection: bool = False
    graphiql: bool = False
    execution_timeout_seconds: float = Field(25.0, gt=0, le=300)
    max_subscriptions: int = Field(1000, ge=0)
    max_subscriptions_per_client: int = Field(10, ge=0)
    subscription_idle_timeout_seconds: float = Field(1800.0, gt=0)


class EventsSettings(Section):
    backend: Literal["auto", "memory", "postgres", "redis"] = "auto"
    redis_url: SecretStr | None = None
    redis_url_file: Path | None = None


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


PRODUCTION_CACHE_TTL_SECONDS = 300.0
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


PROFILE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "development": {
        "server.host": "127.0.0.1",
        "log.format": "console",
        "auth.demo_user": "demo",
        "database.url": "sqlite+aiosqlite:///./data/pcf-api.db",
        "database.auto_migrate": True,
        "graphql.introspection": True,
        "graphql.graphiql": True,
    },
    "staging": {"server.host": "0.0.0.0", "log.format": "json"},
    "production": {"server.host": "0.0.0.0", "log.format": "json"},
}


@dataclass(frozen=True)
class Source:
    """Where one value came from: its layer and the exact place within it."""

    layer: Literal["default", "profile", "toml", "env", "cli"]
    where: str = ""

    def __str__(self) -> str:
        return f"{self.layer} {self.where}".strip()


@dataclass(frozen=True)
class _FileRef:
    path: Path


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, Source]

    def source_of(self, key: str) -> Source:
        return self.sources.get(key, Source("default"))


class ConfigError(Exception):
    """The configuration cannot be used; each problem names its key and layer."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


Layer = dict[str, tuple[Any, Source]]


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Build validated settings from every layer, or raise ConfigError naming each problem."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_FILE_ENV):
        config_file = Path(environ[CONFIG_FILE_ENV])

    problems: list[str] = []
    toml_layer = _toml_layer(config_file, problems) if config_file else {}
    env_layer = _env_layer(environ, problems)
    cli_layer: Layer = {}
    for key, value in (cli or {}).items():
        source = Source("cli", _cli_flag(key))
        if _check_key(key, source, problems):
            cli_layer[key] = (value, source)
    if problems:
        raise ConfigError(problems)

    upper_layers = [toml_layer, env_layer, cli_layer]
    environment = _pick_environment(upper_layers)
    profile_layer: Layer = {
        key: (value, Source("profile", environment))
        for key, value in PROFILE_DEFAULTS.get(environment, {}).items()
    }
    merged: Layer = {}
    for layer in [profile_layer, *upper_layers]:
        merged.update(layer)

    flat = _resolve_secret_files(merged, problems)
    if problems:
        raise ConfigError(problems)
    sources = {key: source for key, (_, source) in merged.items()}
    try:
        settings = Settings.model_validate(_unflatten(flat))
    except ValidationError as exc:
        raise ConfigError(_describe_validation_errors(exc, merged)) from None

    unsafe = inconsistent_settings(settings) + unsafe_settings(settings, sources)
    if unsafe:
        raise ConfigError(unsafe)
    return LoadedSettings(settings=settings, sources=sources)


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


# The flags `pcf-api serve` and `pcf-api config show` map onto keys (see cli.py), so that a
# problem names the flag that was typed; other keys given through ``cli=`` get a derived name.
CLI_FLAGS: Mapping[str, str] = {
    "environment": "--environment",
    "server.host": "--host",
    "server.port": "--port",
    "log.level": "--log-level",
    "log.format": "--log-format",
}


def _cli_flag(key: str) -> str:
    return CLI_FLAGS.get(key) or "--" + key.rsplit(".", 1)[-1].replace("_", "-")


def _pick_environment(layers: list[Layer]) -> str:
    environment = "production"
    for layer in layers:
        if "environment" in layer:
            environment = str(layer["environment"][0])
    return environment


def _check_key(key: str, source: Source, problems: list[str]) -> bool:
    keys = known_keys()
    base = key.removesuffix(FILE_SUFFIX)
    if key in keys or (key.endswith(FILE_SUFFIX) and keys.get(base, False)):
        return True
    problems.append(f"{key} ({source}): unknown setting")
    return False


def _toml_layer(path: Path, problems: list[str]) -> Layer:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"config file {path}: cannot be read ({exc.strerror})")
        return {}
    except UnicodeDecodeError:
        problems.append(f"config file {path}: not UTF-8 text")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path}: invalid TOML ({exc})")
        return {}
    layer: Layer = {}
    for key, value in _flatten(document):
        source = Source("toml", str(path))
        if _check_key(key, source, problems):
            layer[key] = (value, source)
    return layer


def _flatten(document: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """Dotted keys for the two levels the settings have; deeper tables stay values (log.levels)."""
    for name, value in document.items():
        if isinstance(value, Mapping) and name in Settings.model_fields and name != "environment":
            for sub_name, sub_value in value.items():
                yield f"{name}.{sub_name}", sub_value
        else:
            yield name, value


def _env_layer(environ: Mapping[str, str], problems: list[str]) -> Layer:
    layer: Layer = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_FILE_ENV:
            continue
        key = variable[len(ENV_PREFIX) :].lower().replace("__", ".")
        source = Source("env", variable)
        if _check_key(key, source, problems):
            layer[key] = (value, source)
    return layer


def _resolve_secret_files(merged: Layer, problems: list[str]) -> dict[str, Any]:
    """Turn winning ``x_file`` entries into the secret ``x`` read from that file."""
    by_base: dict[str, list[str]] = {}
    for key in merged:
        by_base.setdefault(key.removesuffix(FILE_SUFFIX), []).append(key)

    flat: dict[str, Any] = {}
    for base, keys in by_base.items():
        if len(keys) == 1:
            key = keys[0]
            value, source = merged[key]
            if key.endswith(FILE_SUFFIX):
                flat[key] = value
                flat[base] = _read_secret_file(key, Path(str(value)), source, problems)
                merged[base] = (flat[base], source)  # the secret comes from where its path did
            else:
                flat[key] = value
            continue
        file_key = base + FILE_SUFFIX
        (value, value_source), (path, path_source) = merged[base], merged[file_key]
        if value_source.layer == path_source.layer:
            problems.append(
                f"{base} ({value_source}) and {file_key} ({path_source}): set only one of them"
            )
        elif _LAYER_RANK[path_source.layer] > _LAYER_RANK[value_source.layer]:
            flat[file_key] = path
            flat[base] = _read_secret_file(file_key, Path(str(path)), path_source, problems)
            merged[base] = (flat[base], path_source)
        else:
            flat[base] = value
            merged.pop(file_key)
    return flat


_LAYER_RANK = {"default": 0, "profile": 1, "toml": 2, "env": 3, "cli": 4}


def read_secret_file(path: Path) -> str:
    """A secret file's value: its UTF-8 text without the trailing line break. Raises OSError and
    UnicodeDecodeError (whose message quotes the bytes: never show it)."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def _read_secret_file(key: str, path: Path, source: Source, problems: list[str]) -> str | None:
    try:
        return read_secret_file(path)
    except OSError as exc:
        problems.append(f"{key} ({source}): cannot read secret file {path} ({exc.strerror})")
        return None
    except UnicodeDecodeError:  # its message quotes the offending bytes: part of the secret
        problems.append(f"{key} ({source}): secret file {path} is not UTF-8 text")
        return None


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if "." in key:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
        else:
            nested[key] = value
    return nested


def _describe_validation_errors(exc: ValidationError, merged: Layer) -> list[str]:
    secrets = known_keys()
    problems = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"][:2])
        source = merged.get(key, (None, Source("default")))[1]
        shown = "" if secrets.get(key, False) else f" = {error.get('input')!r}"
        problems.append(f"{key}{shown} ({source}): {error['msg']}")
    return problems


def redacted_view(loaded: LoadedSettings) -> list[tuple[str, str, Source]]:
    """(key, printable value, source) for every setting; secrets show only whether they are set."""
    rows = []
    data = loaded.settings.model_dump()
    for key, secret in known_keys().items():
        section, _, name = key.partition(".")
        value = data[section][name] if name else data[section]
        shown = _format_secret(value) if secret else _format_value(value)
        rows.append((key, shown, loaded.source_of(key)))
    return rows


def _format_secret(value: Any) -> str:
    return "<unset>" if value is None else "<redacted>"


def _format_value(value: Any) -> str:
    if value is None:
        return "<unset>"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)
