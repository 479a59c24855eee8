"""Specification of pcf_api.config: layered settings that remember where each value came from.

Layers, lowest first: model defaults < environment profile < TOML file < PCF_* variables < CLI.
Every test passes an explicit ``environ`` so the real process environment never leaks in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pcf_api.config import (
    KNOWN_DEFAULT_SECRETS,
    MIN_SECRET_LENGTH,
    ConfigError,
    LoadedSettings,
    Settings,
    Source,
    known_keys,
    load_settings,
    redacted_view,
)
from pcf_api.config import policy as config_policy

HS256_SECRET = "prod-hs256-Secret-0123456789-abcdefghij"  # long enough for production
DB_PASSWORD = "dbPassw0rd-Kx81"
DB_URL = f"postgresql+asyncpg://app:{DB_PASSWORD}@db.internal:5432/pcf"

# The least a production deployment needs; tests add to or override it.
SAFE_PRODUCTION_ENV: Mapping[str, str] = {
    "PCF_DATABASE__URL": DB_URL,
    "PCF_AUTH__HS256_SECRET": HS256_SECRET,
}
DEVELOPMENT_ENV: Mapping[str, str] = {"PCF_ENVIRONMENT": "development"}


def load(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    return load_settings(environ=dict(environ or {}), config_file=config_file, cli=cli)


def config_error(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
) -> str:
    """The message of the ConfigError that loading must raise."""
    with pytest.raises(ConfigError) as caught:
        load(environ, config_file=config_file, cli=cli)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return str(caught.value)


@pytest.fixture
def write_toml(tmp_path: Path) -> Any:
    def write(text: str, name: str = "pcf-api.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def secret_file(tmp_path: Path) -> Any:
    def write(content: str | bytes, name: str = "secret") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


# --- Profiles -------------------------------------------------------------------------------


def test_the_environment_defaults_to_production() -> None:
    loaded = load(SAFE_PRODUCTION_ENV)

    assert loaded.settings.environment == "production"
    assert not loaded.settings.is_development
    assert "environment" not in loaded.sources
    assert loaded.source_of("environment") == Source("default")


def test_development_profile_gives_console_logs_a_demo_user_sqlite_and_localhost() -> None:
    loaded = load(DEVELOPMENT_ENV)
    settings = loaded.settings

    assert settings.is_development
    assert settings.log.format == "console"
    assert settings.auth.demo_user == "demo"
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == "sqlite+aiosqlite:///./data/pcf-api.db"
    assert settings.server.host == "127.0.0.1"
    for key in ("log.format", "auth.demo_user", "database.url", "server.host"):
        assert loaded.sources[key] == Source("profile", "development"), key
    assert loaded.sources["environment"] == Source("env", "PCF_ENVIRONMENT")


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_and_staging_profiles_give_json_logs_on_all_interfaces(
    environment: str,
) -> None:
    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_ENVIRONMENT": environment})
    settings = loaded.settings

    assert settings.environment == environment
    assert settings.log.format == "json"
    assert settings.server.host == "0.0.0.0"
    assert settings.auth.demo_user is None
    assert loaded.sources["server.host"] == Source("profile", environment)
    assert loaded.sources["log.format"] == Source("profile", environment)


def test_keys_no_layer_sets_keep_the_model_default_and_report_the_default_layer() -> None:
    loaded = load(DEVELOPMENT_ENV)

    assert loaded.settings.server.port == 8080
    assert loaded.settings.log.level == "INFO"
    assert loaded.settings.auth.hs256_secret is None
    assert "server.port" not in loaded.sources
    assert loaded.source_of("server.port") == Source("default")
    assert loaded.source_of("auth.hs256_secret").layer == "default"


def test_the_profile_is_chosen_by_the_highest_layer_that_sets_the_environment(
    write_toml: Any,
) -> None:
    config = write_toml('environment = "development"\n')

    from_toml = load(config_file=config)
    overridden = load(SAFE_PRODUCTION_ENV, config_file=config, cli={"environment": "staging"})

    assert from_toml.settings.log.format == "console"
    assert from_toml.sources["environment"] == Source("toml", str(config))
    assert overridden.settings.environment == "staging"
    assert overridden.settings.log.format == "json"
    assert overridden.sources["log.format"] == Source("profile", "staging")
    assert overridden.sources["environment"] == Source("cli", "--environment")


# --- Precedence: default < profile < toml < env < cli ----------------------------------------

LAYERS = ("default", "profile", "toml", "env", "cli")


@dataclass(frozen=True)
class Ladder:
    """One key given a distinct value in every layer that can set it (production profile)."""

    key: str
    env_var: str
    flag: str
    default: Any
    profile: Any  # None: the production profile does not set this key
    toml: tuple[str, Any]  # (TOML literal, resulting value)
    env: tuple[str, Any]
    cli: tuple[Any, Any]

    def value(self, settings: Any) -> Any:
        section, name = self.key.split(".")
        return getattr(getattr(settings, section), name)


LADDERS = [
    Ladder(
        "server.port",
        "PCF_SERVER__PORT",
        "--port",
        default=8080,
        profile=None,
        toml=("8001", 8001),
        env=("8002", 8002),
        cli=("8003", 8003),
    ),
    Ladder(
        "log.level",
        "PCF_LOG__LEVEL",
        "--log-level",
        default="INFO",
        profile=None,
        toml=('"ERROR"', "ERROR"),
        env=("DEBUG", "DEBUG"),
        cli=("CRITICAL", "CRITICAL"),
    ),
    Ladder(
        "server.host",
        "PCF_SERVER__HOST",
        "--host",
        default="127.0.0.1",
        profile="0.0.0.0",
        toml=('"10.0.0.1"', "10.0.0.1"),
        env=("10.0.0.2", "10.0.0.2"),
        cli=("10.0.0.3", "10.0.0.3"),
    ),
    Ladder(
        "log.format",
        "PCF_LOG__FORMAT",
        "--log-format",
        default="json",
        profile="json",
        toml=('"console"', "console"),
        env=("json", "json"),
        cli=("console", "console"),
    ),
]


def _ladder_cases() -> list[Any]:
    cases = []
    for ladder in LADDERS:
        for top in LAYERS:
            if top == "profile" and ladder.profile is None:
                continue
            if top == "default" and ladder.profile is not None:
                continue  # the production profile always sets it; covered by the model tests
            cases.append(pytest.param(ladder, top, id=f"{ladder.key}-{top}-wins"))
    return cases


@pytest.mark.parametrize(("ladder", "top"), _ladder_cases())
def test_each_layer_overrides_every_layer_below_it_and_is_named_as_the_source(
    ladder: Ladder, top: str, write_toml: Any
) -> None:
    environ = dict(SAFE_PRODUCTION_ENV)
    cli: dict[str, Any] = {}
    config_file = None
    included = LAYERS[: LAYERS.index(top) + 1]
    if "toml" in included:
        section, name = ladder.key.split(".")
        config_file = write_toml(f"[{section}]\n{name} = {ladder.toml[0]}\n")
    if "env" in included:
        environ[ladder.env_var] = ladder.env[0]
    if "cli" in included:
        cli[ladder.key] = ladder.cli[0]

    loaded = load(environ, config_file=config_file, cli=cli)

    expected_value, expected_source = {
        "default": (ladder.default, Source("default")),
        "profile": (ladder.profile, Source("profile", "production")),
        "toml": (ladder.toml[1], Source("toml", str(config_file))),
        "env": (ladder.env[1], Source("env", ladder.env_var)),
        "cli": (ladder.cli[1], Source("cli", ladder.flag)),
    }[top]
    assert ladder.value(loaded.settings) == expected_value
    assert loaded.source_of(ladder.key) == expected_source
    if top == "default":
        assert ladder.key not in loaded.sources
    else:
        assert loaded.sources[ladder.key] == expected_source


def test_a_higher_layer_that_skips_a_key_leaves_the_lower_layers_value(write_toml: Any) -> None:
    config = write_toml("[server]\nport = 8001\n[log]\nlevel = 'ERROR'\n")

    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_LOG__LEVEL": "DEBUG"}, config_file=config)

    assert loaded.settings.server.port == 8001
    assert loaded.sources["server.port"] == Source("toml", str(config))
    assert loaded.settings.log.level == "DEBUG"
    assert loaded.sources["log.level"] == Source("env", "PCF_LOG__LEVEL")


def test_cli_overrides_toml_even_when_no_environment_variable_is_set(write_toml: Any) -> None:
    config = write_toml("[server]\nport = 8001\n")

    loaded = load(SAFE_PRODUCTION_ENV, config_file=config, cli={"server.port": 9000})

    assert loaded.settings.server.port == 9000
    assert loaded.sources["server.port"] == Source("cli", "--port")


def test_source_prints_as_layer_then_place() -> None:
    assert str(Source("default")) == "default"
    assert str(Source("env", "PCF_SERVER__PORT")) == "env PCF_SERVER__PORT"
    assert str(Source("cli", "--port")) == "cli --port"


def test_cli_keys_without_a_dedicated_flag_are_named_after_their_last_part(
    secret_file: Any,
) -> None:
    path = secret_file("x" * 40)

    loaded = load(SAFE_PRODUCTION_ENV, cli={"server.drain_seconds": 1, "auth.issuer": "me"})

    assert loaded.sources["server.drain_seconds"] == Source("cli", "--drain-seconds")
    assert loaded.sources["auth.issuer"] == Source("cli", "--issuer")
    from_file = load(DEVELOPMENT_ENV, cli={"auth.hs256_secret_file": str(path)})
    assert from_file.sources["auth.hs256_secret_file"] == Source("cli", "--hs256-secret-file")


def test_environment_variables_without_the_pcf_prefix_are_ignored() -> None:
    loaded = load(
        {**DEVELOPMENT_ENV, "HOME": "/root", "SERVER__PORT": "1", "pcf_server__port": "2"}
    )

    assert loaded.settings.server.port == 8080


# --- PORT, as platforms set it ----------------------------------------------------------------


def test_the_plain_port_variable_sets_the_server_port(write_toml: Any) -> None:
    config = write_toml("[server]\nport = 8123\n")

    loaded = load({**DEVELOPMENT_ENV, "PORT": "9321", "PCF_CONFIG": str(config)})

    assert loaded.settings.server.port == 9321
    assert loaded.sources["server.port"] == Source("env", "PORT")


def test_pcf_server_port_and_the_port_flag_win_over_port() -> None:
    environ = {**DEVELOPMENT_ENV, "PORT": "9321", "PCF_SERVER__PORT": "9322"}
    assert load(environ).settings.server.port == 9322
    flagged = load({**DEVELOPMENT_ENV, "PORT": "9321"}, cli={"server.port": "9323"})
    assert flagged.settings.server.port == 9323
    assert flagged.sources["server.port"] == Source("cli", "--port")


def test_an_invalid_port_variable_is_named_in_the_error() -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PORT": "http"})

    assert "server.port = 'http' (env PORT)" in message


# --- PCF_CONFIG -------------------------------------------------------------------------------


def test_pcf_config_names_the_toml_file_to_read(write_toml: Any) -> None:
    config = write_toml("[server]\nport = 8123\n")

    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_CONFIG": str(config)})

    assert loaded.settings.server.port == 8123
    assert loaded.sources["server.port"] == Source("toml", str(config))
    assert "config" not in loaded.sources  # PCF_CONFIG itself is not a setting


def test_an_explicit_config_file_overrides_pcf_config(write_toml: Any) -> None:
    from_env = write_toml("[server]\nport = 8123\n", name="from-env.toml")
    explicit = write_toml("[server]\nport = 8456\n", name="explicit.toml")

    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_CONFIG": str(from_env)}, config_file=explicit)

    assert loaded.settings.server.port == 8456
    assert loaded.sources["server.port"] == Source("toml", str(explicit))


def test_an_empty_pcf_config_means_no_file() -> None:
    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_CONFIG": ""})

    assert loaded.settings.server.port == 8080


def test_a_missing_file_named_by_pcf_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_CONFIG": str(missing)})

    assert f"config file {missing}: cannot be read" in message


# --- Secrets given as files (_FILE) -----------------------------------------------------------


def test_a_secret_file_named_in_the_environment_is_read_and_its_path_kept(
    secret_file: Any,
) -> None:
    path = secret_file(HS256_SECRET + "\n")

    loaded = load(
        {"PCF_DATABASE__URL": DB_URL, "PCF_AUTH__HS256_SECRET_FILE": str(path)},
    )

    auth = loaded.settings.auth
    assert auth.hs256_secret is not None
    assert auth.hs256_secret.get_secret_value() == HS256_SECRET
    assert auth.hs256_secret_file == path
    source = Source("env", "PCF_AUTH__HS256_SECRET_FILE")
    assert loaded.sources["auth.hs256_secret_file"] == source
    assert loaded.sources["auth.hs256_secret"] == source


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("value\n", "value"),
        ("value\r\n", "value"),
        ("value\n\n", "value"),
        ("value", "value"),
        ("  spaced value  \n", "  spaced value  "),
        ("line one\nline two\n", "line one\nline two"),
    ],
)
def test_only_trailing_line_breaks_are_stripped_from_a_secret_file(
    content: str, expected: str, secret_file: Any
) -> None:
    path = secret_file(content)

    loaded = load({**DEVELOPMENT_ENV, "PCF_AUTH__HS256_SECRET_FILE": str(path)})

    assert loaded.settings.auth.hs256_secret is not None
    assert loaded.settings.auth.hs256_secret.get_secret_value() == expected


def test_a_secret_file_can_be_named_in_toml(write_toml: Any, secret_file: Any) -> None:
    path = secret_file(HS256_SECRET + "\n")
    config = write_toml(f"[auth]\nhs256_secret_file = '{path}'\n")

    loaded = load({"PCF_DATABASE__URL": DB_URL}, config_file=config)

    assert loaded.settings.auth.hs256_secret is not None
    assert loaded.settings.auth.hs256_secret.get_secret_value() == HS256_SECRET
    assert loaded.sources["auth.hs256_secret"] == Source("toml", str(config))


def test_the_database_url_can_be_read_from_a_file(secret_file: Any) -> None:
    path = secret_file(DB_URL + "\n")

    loaded = load({"PCF_AUTH__HS256_SECRET": HS256_SECRET, "PCF_DATABASE__URL_FILE": str(path)})

    database = loaded.settings.database
    assert database.url is not None
    assert database.url.get_secret_value() == DB_URL
    assert database.url_file == path
    assert loaded.sources["database.url"] == Source("env", "PCF_DATABASE__URL_FILE")
    assert DB_PASSWORD in loaded.settings.secret_values()


def test_a_missing_secret_file_is_an_error_naming_the_key_and_layer(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"

    message = config_error({**DEVELOPMENT_ENV, "PCF_AUTH__HS256_SECRET_FILE": str(missing)})

    assert "auth.hs256_secret_file" in message
    assert "env PCF_AUTH__HS256_SECRET_FILE" in message
    assert str(missing) in message
    assert "cannot read secret file" in message


def test_a_missing_database_url_file_named_in_toml_is_an_error(
    tmp_path: Path, write_toml: Any
) -> None:
    missing = tmp_path / "no-such-url"
    config = write_toml(f"environment = 'development'\n[database]\nurl_file = '{missing}'\n")

    message = config_error(config_file=config)

    assert "database.url_file" in message
    assert f"toml {config}" in message


def test_a_secret_file_that_is_not_utf8_is_an_error_that_does_not_quote_its_bytes(
    secret_file: Any,
) -> None:
    path = secret_file(b"\xffsecret-bytes\xfe")

    message = config_error({**DEVELOPMENT_ENV, "PCF_AUTH__HS256_SECRET_FILE": str(path)})

    assert "auth.hs256_secret_file (env PCF_AUTH__HS256_SECRET_FILE)" in message
    assert "not UTF-8" in message
    assert "secret-bytes" not in message
    assert "0xff" not in message


def test_a_secret_and_its_file_in_the_same_environment_are_an_error(secret_file: Any) -> None:
    path = secret_file("from-the-file")

    message = config_error(
        {
            **DEVELOPMENT_ENV,
            "PCF_AUTH__HS256_SECRET": "from-the-variable",
            "PCF_AUTH__HS256_SECRET_FILE": str(path),
        }
    )

    assert "auth.hs256_secret (env PCF_AUTH__HS256_SECRET)" in message
    assert "auth.hs256_secret_file (env PCF_AUTH__HS256_SECRET_FILE)" in message
    assert "set only one of them" in message
    assert "from-the-variable" not in message


def test_a_database_url_and_its_file_in_the_same_toml_are_an_error(
    secret_file: Any, write_toml: Any
) -> None:
    path = secret_file(DB_URL)
    config = write_toml(f"[database]\nurl = '{DB_URL}'\nurl_file = '{path}'\n")

    message = config_error(DEVELOPMENT_ENV, config_file=config)

    assert f"database.url (toml {config}) and database.url_file (toml {config})" in message
    assert DB_PASSWORD not in message


@pytest.mark.parametrize(
    ("value_layer", "file_layer"),
    [
        ("toml", "env"),
        ("env", "toml"),
        ("toml", "cli"),
        ("cli", "toml"),
        ("env", "cli"),
        ("cli", "env"),
    ],
)
def test_when_a_secret_and_its_file_are_in_different_layers_the_higher_layer_wins(
    value_layer: str, file_layer: str, secret_file: Any, write_toml: Any
) -> None:
    path = secret_file("secret-from-the-file-0123456789abcdef\n")
    direct = "secret-given-directly-0123456789abcdef"
    environ = {**DEVELOPMENT_ENV}
    cli: dict[str, Any] = {}
    toml_lines = []
    for layer, key, value in (
        (value_layer, "hs256_secret", direct),
        (file_layer, "hs256_secret_file", str(path)),
    ):
        if layer == "toml":
            toml_lines.append(f"{key} = '{value}'")
        elif layer == "env":
            environ[f"PCF_AUTH__{key.upper()}"] = value
        else:
            cli[f"auth.{key}"] = value
    config = write_toml("[auth]\n" + "\n".join(toml_lines) + "\n")

    loaded = load(environ, config_file=config, cli=cli)

    auth = loaded.settings.auth
    assert auth.hs256_secret is not None
    file_wins = LAYERS.index(file_layer) > LAYERS.index(value_layer)
    if file_wins:
        assert auth.hs256_secret.get_secret_value() == "secret-from-the-file-0123456789abcdef"
        assert auth.hs256_secret_file == path
        assert loaded.sources["auth.hs256_secret"] == loaded.sources["auth.hs256_secret_file"]
        assert loaded.sources["auth.hs256_secret"].layer == file_layer
    else:
        assert auth.hs256_secret.get_secret_value() == direct
        assert auth.hs256_secret_file is None
        assert loaded.sources["auth.hs256_secret"].layer == value_layer
        assert "auth.hs256_secret_file" not in loaded.sources


def test_a_database_url_file_overrides_the_development_profiles_sqlite_url(
    secret_file: Any,
) -> None:
    path = secret_file(DB_URL)

    loaded = load({**DEVELOPMENT_ENV, "PCF_DATABASE__URL_FILE": str(path)})

    assert loaded.settings.database.url is not None
    assert loaded.settings.database.url.get_secret_value() == DB_URL
    assert loaded.sources["database.url"] == Source("env", "PCF_DATABASE__URL_FILE")


def test_a_database_url_in_the_environment_beats_a_url_file_in_toml(
    secret_file: Any, write_toml: Any
) -> None:
    path = secret_file("sqlite:///from-file.db")
    config = write_toml(f"[database]\nurl_file = '{path}'\n")

    loaded = load({**DEVELOPMENT_ENV, "PCF_DATABASE__URL": DB_URL}, config_file=config)

    assert loaded.settings.database.url is not None
    assert loaded.settings.database.url.get_secret_value() == DB_URL
    assert loaded.settings.database.url_file is None


# --- Invalid values ---------------------------------------------------------------------------


def test_an_invalid_environment_variable_names_the_key_the_variable_and_the_value() -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_SERVER__PORT": "abc"})

    assert "server.port = 'abc' (env PCF_SERVER__PORT)" in message
    assert "valid integer" in message


def test_an_invalid_toml_value_names_the_key_and_the_file(write_toml: Any) -> None:
    config = write_toml("[server]\nport = 'abc'\n")

    message = config_error(SAFE_PRODUCTION_ENV, config_file=config)

    assert f"server.port = 'abc' (toml {config})" in message


def test_an_invalid_cli_value_names_the_key_and_the_flag() -> None:
    message = config_error(SAFE_PRODUCTION_ENV, cli={"server.port": "abc"})

    assert "server.port = 'abc' (cli --port)" in message


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("PCF_SERVER__PORT", "0", "server.port"),
        ("PCF_SERVER__PORT", "65536", "server.port"),
        ("PCF_SERVER__MAX_BODY_BYTES", "10", "server.max_body_bytes"),
        ("PCF_HEALTH__CHECK_TIMEOUT_SECONDS", "5", "health.check_timeout_seconds"),
        ("PCF_LOG__LEVEL", "LOUD", "log.level"),
        ("PCF_LOG__FORMAT", "xml", "log.format"),
        ("PCF_AUTHZ__BACKEND", "ldap", "authz.backend"),
        ("PCF_ENVIRONMENT", "dev", "environment"),
        ("PCF_METRICS__PORT", "99999", "metrics.port"),
        ("PCF_TESTING__DELAY_SECONDS", "-1", "testing.delay_seconds"),
    ],
)
def test_out_of_range_and_unknown_choices_are_rejected_naming_key_and_variable(
    variable: str, value: str, key: str
) -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, variable: value})

    assert f"{key} = '{value}' (env {variable})" in message


def test_scrubbing_is_set_from_a_comma_separated_list_and_an_empty_one_turns_it_off() -> None:
    assert load(SAFE_PRODUCTION_ENV).settings.log.scrub == ["email", "card"]
    only_cards = load({**SAFE_PRODUCTION_ENV, "PCF_LOG__SCRUB": " card ,"}).settings.log
    assert only_cards.scrub == ["card"]
    assert load({**SAFE_PRODUCTION_ENV, "PCF_LOG__SCRUB": ""}).settings.log.scrub == []


def test_scrub_patterns_from_the_environment_are_one_per_line_so_they_may_hold_commas() -> None:
    patterns = "\n".join([r"order-\d{4,8}", "", r"(?:ab|cd),x"])

    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_LOG__SCRUB_PATTERNS": patterns})

    assert loaded.settings.log.scrub_patterns == [r"order-\d{4,8}", r"(?:ab|cd),x"]


def test_scrub_patterns_in_toml_are_a_list(write_toml: Any) -> None:
    config = write_toml("[log]\nscrub_patterns = ['order-\\d+', 'a,b']\n")

    loaded = load(SAFE_PRODUCTION_ENV, config_file=config)

    assert loaded.settings.log.scrub_patterns == [r"order-\d+", "a,b"]


def test_a_scrub_pattern_that_is_not_a_regular_expression_is_refused_naming_it() -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_LOG__SCRUB_PATTERNS": "order-(\\d+"})

    assert "log.scrub_patterns" in message
    assert "not a regular expression: 'order-(\\\\d+'" in message


def test_a_header_line_limit_above_the_whole_head_limit_is_refused() -> None:
    message = config_error(
        {
            **SAFE_PRODUCTION_ENV,
            "PCF_SERVER__MAX_HEADER_LINE_BYTES": "32768",
            "PCF_SERVER__MAX_HEADER_BYTES": "16384",
        }
    )

    assert "max_header_line_bytes must not exceed max_header_bytes" in message


def test_every_invalid_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load({**SAFE_PRODUCTION_ENV, "PCF_SERVER__PORT": "abc", "PCF_LOG__LEVEL": "LOUD"})

    assert len(caught.value.problems) == 2
    assert any(p.startswith("server.port") for p in caught.value.problems)
    assert any(p.startswith("log.level") for p in caught.value.problems)


@pytest.mark.parametrize(
    "toml",
    [
        "[auth]\nhs256_secret = ['{secret}']\n",
        "[auth]\nhs256_secret = {{ value = '{secret}' }}\n",
        "[database]\nurl = ['{secret}']\n",
    ],
)
def test_an_invalid_secret_is_reported_without_echoing_its_value(
    toml: str, write_toml: Any
) -> None:
    secret = "leaky-Secret-Value-9f8e7d6c5b4a"
    config = write_toml(toml.format(secret=secret))

    message = config_error(DEVELOPMENT_ENV, config_file=config)

    assert f"(toml {config})" in message
    assert secret not in message
    assert "leaky" not in message


def test_an_unknown_key_holding_a_secret_is_reported_without_its_value() -> None:
    message = config_error({**DEVELOPMENT_ENV, "PCF_AUTH__HS256_SECRT": "leaky-Secret-Value"})

    assert "auth.hs256_secrt (env PCF_AUTH__HS256_SECRT): unknown setting" in message
    assert "leaky-Secret-Value" not in message


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("PCF_SERVER__PROT", "server.prot"),
        ("PCF_SERVER_PORT", "server_port"),
        ("PCF_NOSUCHSECTION__PORT", "nosuchsection.port"),
        ("PCF_SERVER", "server"),
        ("PCF_LOG__LEVELS__UVICORN", "log.levels.uvicorn"),
        # Only secrets have a _file form.
        ("PCF_SERVER__PORT_FILE", "server.port_file"),
        ("PCF_AUTH__DEMO_USER_FILE", "auth.demo_user_file"),
    ],
)
def test_unknown_environment_variables_with_the_prefix_are_errors(variable: str, key: str) -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, variable: "1"})

    assert f"{key} (env {variable}): unknown setting" in message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nprot = 8080\n", "server.prot"),
        ("port = 8080\n", "port"),
        ("[nosuchsection]\nport = 8080\n", "nosuchsection"),
        ("[server.tls]\ncert = 'x'\n", "server.tls"),
    ],
)
def test_unknown_toml_keys_are_errors_naming_the_file(toml: str, key: str, write_toml: Any) -> None:
    config = write_toml(toml)

    message = config_error(SAFE_PRODUCTION_ENV, config_file=config)

    assert f"{key} (toml {config}): unknown setting" in message


def test_unknown_cli_keys_are_errors() -> None:
    message = config_error(SAFE_PRODUCTION_ENV, cli={"server.prot": "leaky-Secret-Value"})

    assert "server.prot (cli --prot): unknown setting" in message
    assert "leaky-Secret-Value" not in message


def test_problems_from_the_file_and_the_environment_are_reported_together(
    write_toml: Any,
) -> None:
    config = write_toml("[server]\nprot = 1\n")

    with pytest.raises(ConfigError) as caught:
        load({"PCF_LOG__LEVLE": "DEBUG"}, config_file=config)

    assert caught.value.problems == [
        f"server.prot (toml {config}): unknown setting",
        "log.levle (env PCF_LOG__LEVLE): unknown setting",
    ]


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    message = config_error(SAFE_PRODUCTION_ENV, config_file=missing)

    assert message == f"config file {missing}: cannot be read (No such file or directory)"


def test_a_directory_given_as_config_file_is_an_error(tmp_path: Path) -> None:
    message = config_error(SAFE_PRODUCTION_ENV, config_file=tmp_path)

    assert f"config file {tmp_path}: cannot be read" in message


def test_malformed_toml_is_an_error(write_toml: Any) -> None:
    config = write_toml("[server\nport = \n")

    message = config_error(SAFE_PRODUCTION_ENV, config_file=config)

    assert f"config file {config}: invalid TOML" in message


def test_a_config_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes("[auth]\ndemo_user = 'J\xfcrgen'\n".encode("latin-1"))

    message = config_error(SAFE_PRODUCTION_ENV, config_file=config)

    assert message == f"config file {config}: not UTF-8 text"


# --- Settings refused outside development -----------------------------------------------------

SHORT_SECRET = "x" * (MIN_SECRET_LENGTH - 1)
UNSAFE_CASES = [
    pytest.param(
        {"PCF_AUTH__DEMO_USER": "alice"},
        "auth.demo_user (env PCF_AUTH__DEMO_USER)",
        id="demo-user",
    ),
    pytest.param({"PCF_DATABASE__URL": ""}, "database.url: required", id="empty-database-url"),
    pytest.param(
        {"PCF_AUTH__HS256_SECRET": ""},
        "auth.hs256_secret (env PCF_AUTH__HS256_SECRET)",
        id="empty-secret",
    ),
    pytest.param({"PCF_AUTH__HS256_SECRET": "changeme"}, "auth.hs256_secret", id="changeme"),
    pytest.param({"PCF_AUTH__HS256_SECRET": " ChangeMe "}, "auth.hs256_secret", id="any-case"),
    pytest.param({"PCF_AUTH__HS256_SECRET": SHORT_SECRET}, "auth.hs256_secret", id="short"),
    pytest.param(
        {"PCF_TESTING__DELAY_SECONDS": "0.5"},
        "testing.delay_seconds (env PCF_TESTING__DELAY_SECONDS)",
        id="fault-injection",
    ),
    pytest.param(
        {"PCF_GRAPHQL__INTROSPECTION": "true"},
        "graphql.introspection (env PCF_GRAPHQL__INTROSPECTION)",
        id="introspection",
    ),
    pytest.param(
        {"PCF_GRAPHQL__GRAPHIQL": "true"},
        "graphql.graphiql (env PCF_GRAPHQL__GRAPHIQL)",
        id="graphiql",
    ),
]


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize(("overrides", "expected"), UNSAFE_CASES)
def test_production_and_staging_refuse_unsafe_settings_naming_the_key(
    environment: str, overrides: dict[str, str], expected: str
) -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_ENVIRONMENT": environment, **overrides})

    assert expected in message
    assert f"in {environment}" in message


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_and_staging_require_a_database_url(environment: str) -> None:
    message = config_error({"PCF_ENVIRONMENT": environment, "PCF_AUTH__HS256_SECRET": HS256_SECRET})

    assert message == (
        f"database.url: required in {environment} (set PCF_DATABASE__URL or PCF_DATABASE__URL_FILE)"
    )


@pytest.mark.parametrize("secret", sorted(KNOWN_DEFAULT_SECRETS))
def test_every_known_default_secret_is_refused_in_production(secret: str) -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_AUTH__HS256_SECRET": secret})

    assert "auth.hs256_secret (env PCF_AUTH__HS256_SECRET)" in message


def test_known_default_secrets_are_refused_whatever_the_length_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every known default is also short today; the list must not depend on that.
    monkeypatch.setattr(config_policy, "MIN_SECRET_LENGTH", 1)

    assert load({**SAFE_PRODUCTION_ENV, "PCF_AUTH__HS256_SECRET": "short"})
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_AUTH__HS256_SECRET": "Change-Me"})
    assert "auth.hs256_secret (env PCF_AUTH__HS256_SECRET)" in message


def test_a_refused_secret_is_not_echoed() -> None:
    short = "tiny-Secret-Value"

    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_AUTH__HS256_SECRET": short})

    assert short not in message


def test_a_weak_secret_read_from_a_file_is_refused_naming_the_file_variable(
    secret_file: Any,
) -> None:
    path = secret_file("changeme\n")

    message = config_error({"PCF_DATABASE__URL": DB_URL, "PCF_AUTH__HS256_SECRET_FILE": str(path)})

    assert "auth.hs256_secret (env PCF_AUTH__HS256_SECRET_FILE)" in message


def test_every_unsafe_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            {
                "PCF_AUTH__DEMO_USER": "alice",
                "PCF_AUTH__HS256_SECRET": "changeme",
                "PCF_TESTING__DELAY_SECONDS": "1",
            }
        )

    keys = [problem.split(" ", 1)[0].rstrip(":") for problem in caught.value.problems]
    assert keys == ["auth.demo_user", "database.url", "auth.hs256_secret", "testing.delay_seconds"]


def test_development_accepts_every_setting_production_refuses() -> None:
    loaded = load(
        {
            **DEVELOPMENT_ENV,
            "PCF_AUTH__DEMO_USER": "alice",
            "PCF_DATABASE__URL": "",
            "PCF_AUTH__HS256_SECRET": "changeme",
            "PCF_TESTING__DELAY_SECONDS": "1.5",
        }
    )

    settings = loaded.settings
    assert settings.auth.demo_user == "alice"
    assert settings.testing.delay_seconds == 1.5
    assert settings.auth.hs256_secret is not None
    assert settings.auth.hs256_secret.get_secret_value() == "changeme"


def test_a_safe_production_configuration_loads() -> None:
    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_AUTH__DEMO_USER": ""})

    settings = loaded.settings
    assert settings.environment == "production"
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == DB_URL
    assert settings.auth.hs256_secret is not None
    assert settings.auth.hs256_secret.get_secret_value() == HS256_SECRET
    assert settings.testing.delay_seconds == 0


def test_a_secret_of_exactly_the_minimum_length_is_accepted_in_production() -> None:
    secret = "k" * MIN_SECRET_LENGTH

    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_AUTH__HS256_SECRET": secret})

    assert loaded.settings.auth.hs256_secret is not None


def test_production_without_an_hs256_secret_loads() -> None:
    # Tokens may be verified through jwks_url instead; only a weak secret is refused.
    loaded = load({"PCF_DATABASE__URL": DB_URL, "PCF_AUTH__JWKS_URL": "https://idp/jwks"})

    assert loaded.settings.auth.hs256_secret is None


# --- Identity, authorization and rate limits ------------------------------------------------


def test_token_algorithms_default_to_rs256_and_es256_and_hs256_only_with_a_secret() -> None:
    without_secret = load({"PCF_DATABASE__URL": DB_URL}).settings.auth
    with_secret = load(SAFE_PRODUCTION_ENV).settings.auth

    assert without_secret.algorithms is None
    assert without_secret.allowed_algorithms() == {"RS256", "ES256"}
    assert with_secret.allowed_algorithms() == {"RS256", "ES256", "HS256"}
    assert without_secret.leeway_seconds == 30
    assert without_secret.jwks_refresh_min_interval_seconds == 60


def test_an_explicit_algorithm_list_replaces_the_defaults() -> None:
    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_AUTH__ALGORITHMS": "ES256, RS256,ES256"})

    assert loaded.settings.auth.algorithms == ["ES256", "RS256"]
    assert loaded.settings.auth.allowed_algorithms() == {"ES256", "RS256"}


@pytest.mark.parametrize("given", ["none", "RS256,none", "NONE", "HS1"])
def test_alg_none_and_unknown_algorithms_are_refused(given: str) -> None:
    message = config_error({**DEVELOPMENT_ENV, "PCF_AUTH__ALGORITHMS": given})

    assert "auth.algorithms" in message
    assert "unsupported algorithm" in message


def test_an_empty_algorithm_list_is_refused(write_toml: Any) -> None:
    message = config_error(DEVELOPMENT_ENV, config_file=write_toml("[auth]\nalgorithms = []\n"))

    assert "auth.algorithms" in message
    assert "at least one algorithm" in message


def test_a_jwks_url_and_a_jwks_path_together_are_refused(tmp_path: Path) -> None:
    message = config_error(
        {
            **DEVELOPMENT_ENV,
            "PCF_AUTH__JWKS_URL": "https://idp.example/jwks",
            "PCF_AUTH__JWKS_PATH": str(tmp_path / "jwks.json"),
        }
    )

    assert message == "auth.jwks_url and auth.jwks_path: set only one of them"


def test_authorization_defaults_to_the_local_backend_with_a_five_minute_cache() -> None:
    authz = load(SAFE_PRODUCTION_ENV).settings.authz

    assert authz.backend == "local"
    assert authz.cache_ttl_seconds == 300
    assert authz.stale_window_seconds == 300
    assert authz.spicedb_preshared_key is None


def test_the_spicedb_backend_needs_an_endpoint_and_a_preshared_key_in_every_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load({**DEVELOPMENT_ENV, "PCF_AUTHZ__BACKEND": "spicedb"})

    keys = [problem.split(":", 1)[0] for problem in caught.value.problems]
    assert keys == ["authz.spicedb_endpoint", "authz.spicedb_preshared_key"]


def test_the_spicedb_preshared_key_may_come_from_a_file_and_is_a_secret(secret_file: Any) -> None:
    key = "spicedb-Preshared-Key-0123456789"
    loaded = load(
        {
            **SAFE_PRODUCTION_ENV,
            "PCF_AUTHZ__BACKEND": "spicedb",
            "PCF_AUTHZ__SPICEDB_ENDPOINT": "http://spicedb:8443",
            "PCF_AUTHZ__SPICEDB_PRESHARED_KEY_FILE": str(secret_file(key + "\n")),
        }
    )

    authz = loaded.settings.authz
    assert authz.spicedb_preshared_key is not None
    assert authz.spicedb_preshared_key.get_secret_value() == key
    assert key in loaded.settings.secret_values()
    assert key not in repr(redacted_view(loaded))


def test_a_spicedb_endpoint_that_is_not_an_http_url_is_refused() -> None:
    message = config_error(
        {**DEVELOPMENT_ENV, "PCF_AUTHZ__SPICEDB_ENDPOINT": "grpc://spicedb:50051"}
    )

    assert "authz.spicedb_endpoint" in message
    assert "http://" in message


def test_production_refuses_a_decision_cache_ttl_other_than_five_minutes() -> None:
    message = config_error({**SAFE_PRODUCTION_ENV, "PCF_AUTHZ__CACHE_TTL_SECONDS": "60"})

    assert message == (
        "authz.cache_ttl_seconds (env PCF_AUTHZ__CACHE_TTL_SECONDS): fixed at 300 in production"
    )


@pytest.mark.parametrize("environment", ["development", "staging"])
def test_the_decision_cache_ttl_is_configurable_outside_production(environment: str) -> None:
    loaded = load(
        {**SAFE_PRODUCTION_ENV, "PCF_ENVIRONMENT": environment, "PCF_AUTHZ__CACHE_TTL_SECONDS": "5"}
    )

    assert loaded.settings.authz.cache_ttl_seconds == 5


def test_rate_limits_default_to_the_documented_budgets_kept_in_process() -> None:
    rate_limit = load(SAFE_PRODUCTION_ENV).settings.rate_limit

    assert rate_limit.enabled
    assert (rate_limit.queries, rate_limit.mutations) == ("1000/minute", "100/minute")
    assert (rate_limit.subscriptions, rate_limit.search) == ("10/minute", "10/minute")
    assert rate_limit.storage_url is None


def test_rate_limits_are_read_in_the_limits_notation(write_toml: Any) -> None:
    config = write_toml("[rate_limit]\nsearch = '5 per second'\n")
    loaded = load({**DEVELOPMENT_ENV, "PCF_RATE_LIMIT__QUERIES": "20/second"}, config_file=config)

    assert loaded.settings.rate_limit.queries == "20/second"
    assert loaded.settings.rate_limit.search == "5 per second"
    assert loaded.sources["rate_limit.queries"] == Source("env", "PCF_RATE_LIMIT__QUERIES")


@pytest.mark.parametrize("rate", ["lots", "100/minute;lots", ""])
def test_a_rate_that_the_limits_library_cannot_parse_is_refused(rate: str) -> None:
    message = config_error({**DEVELOPMENT_ENV, "PCF_RATE_LIMIT__MUTATIONS": rate})

    assert f"rate_limit.mutations = {rate!r} (env PCF_RATE_LIMIT__MUTATIONS)" in message
    assert "100/minute" in message


def test_several_rates_may_apply_at_once() -> None:
    loaded = load({**DEVELOPMENT_ENV, "PCF_RATE_LIMIT__QUERIES": "1000/hour;50/minute"})

    assert loaded.settings.rate_limit.queries == "1000/hour;50/minute"


def test_rate_limit_storage_takes_a_redis_url_as_a_secret() -> None:
    url = "redis://:r3dis-Pass@redis.internal:6379/0"
    loaded = load({**SAFE_PRODUCTION_ENV, "PCF_RATE_LIMIT__STORAGE_URL": url})

    storage = loaded.settings.rate_limit.storage_url
    assert storage is not None
    assert storage.get_secret_value() == url
    assert url in loaded.settings.secret_values()


def test_rate_limit_storage_of_an_unknown_kind_is_refused_without_echoing_it() -> None:
    url = "mongodb://user:Mong0-Pass@db/limits"

    message = config_error({**DEVELOPMENT_ENV, "PCF_RATE_LIMIT__STORAGE_URL": url})

    assert "rate_limit.storage_url (env PCF_RATE_LIMIT__STORAGE_URL)" in message
    assert "redis://" in message
    assert "Mong0-Pass" not in message


# --- Log levels and lists ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("WARN", "WARNING"),
        ("warn", "WARNING"),
        ("FATAL", "CRITICAL"),
        ("Fatal", "CRITICAL"),
        ("debug", "DEBUG"),
        (" info ", "INFO"),
        ("error", "ERROR"),
        ("critical", "CRITICAL"),
        ("Warning", "WARNING"),
    ],
)
def test_log_level_accepts_aliases_in_any_case(given: str, expected: str) -> None:
    loaded = load({**DEVELOPMENT_ENV, "PCF_LOG__LEVEL": given})

    assert loaded.settings.log.level == expected


def test_log_level_aliases_work_in_toml_and_on_the_command_line(write_toml: Any) -> None:
    config = write_toml("[log]\nlevel = 'warn'\n")

    assert load(DEVELOPMENT_ENV, config_file=config).settings.log.level == "WARNING"
    assert load(DEVELOPMENT_ENV, cli={"log.level": "fatal"}).settings.log.level == "CRITICAL"


def test_log_level_that_is_not_text_is_rejected(write_toml: Any) -> None:
    config = write_toml("[log]\nlevel = 10\n")

    message = config_error(DEVELOPMENT_ENV, config_file=config)

    assert f"log.level = 10 (toml {config})" in message


def test_module_log_levels_are_read_from_a_comma_separated_variable() -> None:
    loaded = load({**DEVELOPMENT_ENV, "PCF_LOG__LEVELS": "a=DEBUG,b=warn"})

    assert loaded.settings.log.levels == {"a": "DEBUG", "b": "WARNING"}
    assert loaded.sources["log.levels"] == Source("env", "PCF_LOG__LEVELS")


def test_module_log_levels_tolerate_spaces_and_empty_items() -> None:
    loaded = load(
        {**DEVELOPMENT_ENV, "PCF_LOG__LEVELS": " uvicorn.access = fatal , ,sqlalchemy=Info,"}
    )

    assert loaded.settings.log.levels == {"uvicorn.access": "CRITICAL", "sqlalchemy": "INFO"}


def test_an_empty_module_log_levels_variable_sets_none() -> None:
    loaded = load({**DEVELOPMENT_ENV, "PCF_LOG__LEVELS": ""})

    assert loaded.settings.log.levels == {}


def test_module_log_levels_are_read_from_a_toml_table(write_toml: Any) -> None:
    config = write_toml("[log.levels]\n'uvicorn.access' = 'warn'\nhttpx = 'DEBUG'\n")

    loaded = load(DEVELOPMENT_ENV, config_file=config)

    assert loaded.settings.log.levels == {"uvicorn.access": "WARNING", "httpx": "DEBUG"}
    assert loaded.sources["log.levels"] == Source("toml", str(config))


@pytest.mark.parametrize("given", ["a=DEBUG,b", "=DEBUG", "a=DEBUG, =INFO"])
def test_module_log_levels_without_a_name_and_level_pair_are_rejected(given: str) -> None:
    message = config_error({**DEVELOPMENT_ENV, "PCF_LOG__LEVELS": given})

    assert "log.levels" in message
    assert "(env PCF_LOG__LEVELS)" in message
    assert "name=LEVEL" in message


def test_module_log_levels_with_an_unknown_level_are_rejected(write_toml: Any) -> None:
    config = write_toml("[log.levels]\nhttpx = 'LOUD'\n")

    message = config_error(DEVELOPMENT_ENV, config_file=config)

    assert f"(toml {config})" in message
    assert message.startswith("log.levels")


def test_module_log_levels_of_the_wrong_type_are_rejected(write_toml: Any) -> None:
    config = write_toml("[log]\nlevels = ['httpx=DEBUG']\n")

    message = config_error(DEVELOPMENT_ENV, config_file=config)

    assert f"log.levels = ['httpx=DEBUG'] (toml {config})" in message


def test_fault_injection_paths_are_read_as_a_comma_separated_list(write_toml: Any) -> None:
    from_env = load({**DEVELOPMENT_ENV, "PCF_TESTING__DELAY_PATHS": " /graphql, /healthz ,,"})
    config = write_toml("[testing]\ndelay_paths = ['/graphql']\n")
    from_toml = load(DEVELOPMENT_ENV, config_file=config)

    assert from_env.settings.testing.delay_paths == ["/graphql", "/healthz"]
    assert from_toml.settings.testing.delay_paths == ["/graphql"]


# --- Secret values for log redaction ----------------------------------------------------------


def test_secret_values_include_the_hs256_secret_the_database_url_and_its_password() -> None:
    settings = load(SAFE_PRODUCTION_ENV).settings

    values = settings.secret_values()

    assert HS256_SECRET in values
    assert DB_URL in values
    assert DB_PASSWORD in values
    assert len(values) == 3


def test_secret_values_include_a_percent_encoded_password_in_both_forms() -> None:
    url = "postgresql://app:p%40ss%2Fword@db/pcf"

    values = load({**DEVELOPMENT_ENV, "PCF_DATABASE__URL": url}).settings.secret_values()

    assert values == [url, "p%40ss%2Fword", "p@ss/word"]


def test_secret_values_of_a_database_url_without_password_is_the_url_alone() -> None:
    values = load(DEVELOPMENT_ENV).settings.secret_values()

    assert values == ["sqlite+aiosqlite:///./data/pcf-api.db"]


def test_secret_values_cope_with_a_database_url_that_does_not_parse() -> None:
    url = "postgresql://app:pw@[::1/pcf"

    values = load({**DEVELOPMENT_ENV, "PCF_DATABASE__URL": url}).settings.secret_values()

    assert values == [url]


def test_secret_values_leave_out_unset_and_empty_secrets() -> None:
    settings = load({**DEVELOPMENT_ENV, "PCF_DATABASE__URL": "", "PCF_AUTH__HS256_SECRET": ""})

    assert settings.settings.secret_values() == []


def test_settings_without_any_secret_have_no_secret_values() -> None:
    assert Settings().secret_values() == []


def test_known_keys_marks_exactly_the_secrets() -> None:
    keys = known_keys()

    assert {key for key, secret in keys.items() if secret} == {
        "auth.hs256_secret",
        "authz.spicedb_preshared_key",
        "database.url",
        "database.password",
        "events.redis_url",
        "graphql.persisted_queries_redis_url",
        "log.hash_key",
        "metrics.password",
        "rate_limit.storage_url",
        "tracing.headers",
    }
    assert keys["environment"] is False
    assert keys["auth.hs256_secret_file"] is False
    assert "server.port" in keys


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    # The Helm chart mounts each of them as a file; a key without its `_file` setting was
    # refused as an unknown input.
    secrets = [key for key, secret in known_keys().items() if secret]
    environ = dict(DEVELOPMENT_ENV)
    for index, key in enumerate(secrets):
        path = tmp_path / key
        path.write_text(f"redis://secret-{index}@cache:6379/0\n")
        environ["PCF_" + key.upper().replace(".", "__") + "_FILE"] = str(path)
    settings = load(environ).settings

    assert settings.secret_files() == {key: tmp_path / key for key in secrets}
    assert settings.secret_items() == {
        key: f"redis://secret-{index}@cache:6379/0" for index, key in enumerate(secrets)
    }


def test_secret_files_list_only_secrets_read_from_files(tmp_path: Path) -> None:
    path = tmp_path / "hs256"
    path.write_text(HS256_SECRET)
    settings = load(
        {"PCF_DATABASE__URL": DB_URL, "PCF_AUTH__HS256_SECRET_FILE": str(path)}
    ).settings

    assert settings.secret_files() == {"auth.hs256_secret": path}


def test_redis_url_passwords_are_scrubbed_like_the_database_password() -> None:
    url = "redis://:r3dis-Pw@cache:6379/0"
    values = load({**DEVELOPMENT_ENV, "PCF_EVENTS__REDIS_URL": url}).settings.secret_values()

    assert "r3dis-Pw" in values


def test_database_password_is_a_secret_of_its_own() -> None:
    settings = load({**SAFE_PRODUCTION_ENV, "PCF_DATABASE__PASSWORD": "pw-of-its-own"}).settings

    assert settings.database.password is not None
    assert "pw-of-its-own" in settings.secret_values()
    assert "pw-of-its-own" not in repr(settings)


def test_secret_reload_interval_defaults_to_ten_seconds_and_zero_turns_it_off() -> None:
    assert load(SAFE_PRODUCTION_ENV).settings.secrets.reload_interval_seconds == 10
    off = load({**SAFE_PRODUCTION_ENV, "PCF_SECRETS__RELOAD_INTERVAL_SECONDS": "0"})
    assert off.settings.secrets.reload_interval_seconds == 0
    assert "secrets.reload_interval_seconds" in config_error(
        {**SAFE_PRODUCTION_ENV, "PCF_SECRETS__RELOAD_INTERVAL_SECONDS": "-1"}
    )


# --- Redacted view ----------------------------------------------------------------------------


def _view(loaded: LoadedSettings) -> dict[str, tuple[str, Source]]:
    rows = redacted_view(loaded)
    assert [key for key, _, _ in rows] == list(known_keys())
    return {key: (shown, source) for key, shown, source in rows}


def test_redacted_view_hides_set_secrets_and_names_their_source(secret_file: Any) -> None:
    path = secret_file(DB_URL + "\n")
    loaded = load({"PCF_AUTH__HS256_SECRET": HS256_SECRET, "PCF_DATABASE__URL_FILE": str(path)})

    view = _view(loaded)

    assert view["auth.hs256_secret"] == ("<redacted>", Source("env", "PCF_AUTH__HS256_SECRET"))
    assert view["database.url"] == ("<redacted>", Source("env", "PCF_DATABASE__URL_FILE"))
    assert view["database.url_file"] == (f'"{path}"', Source("env", "PCF_DATABASE__URL_FILE"))
    printed = repr(redacted_view(loaded))
    for secret in (HS256_SECRET, DB_URL, DB_PASSWORD):
        assert secret not in printed


def test_redacted_view_marks_unset_values_and_shows_the_rest_as_json(write_toml: Any) -> None:
    config = write_toml("[log.levels]\nhttpx = 'warn'\n[testing]\ndelay_paths = ['/a']\n")
    loaded = load(DEVELOPMENT_ENV, config_file=config, cli={"server.port": 9000})

    view = _view(loaded)

    assert view["auth.hs256_secret"] == ("<unset>", Source("default"))
    assert view["auth.hs256_secret_file"] == ("<unset>", Source("default"))
    assert view["metrics.port"] == ("<unset>", Source("default"))
    assert view["environment"] == ('"development"', Source("env", "PCF_ENVIRONMENT"))
    assert view["server.port"] == ("9000", Source("cli", "--port"))
    assert view["server.host"] == ('"127.0.0.1"', Source("profile", "development"))
    assert view["server.drain_seconds"] == ("5.0", Source("default"))
    assert view["database.url"] == ("<redacted>", Source("profile", "development"))
    assert view["log.levels"] == ('{"httpx": "WARNING"}', Source("toml", str(config)))
    assert view["testing.delay_paths"] == ('["/a"]', Source("toml", str(config)))


def test_config_error_lists_each_problem() -> None:
    error = ConfigError(["a: bad", "b: worse"])

    assert error.problems == ["a: bad", "b: worse"]
    assert str(error) == "a: bad; b: worse"


DEV = {"PCF_ENVIRONMENT": "development"}


def test_cors_origins_come_comma_separated_from_the_environment() -> None:
    settings = load({**DEV, "PCF_CORS__ALLOW_ORIGINS": "http://a.test:3000, https://b.test"})
    assert settings.settings.cors.allow_origins == ["http://a.test:3000", "https://b.test"]
    assert load({**DEV, "PCF_CORS__ALLOW_ORIGINS": ""}).settings.cors.allow_origins == []


@pytest.mark.parametrize(
    "origins", [{"PCF_CORS__ALLOW_ORIGINS": "*"}, {"PCF_CORS__ALLOW_ORIGIN_REGEX": ".*"}]
)
def test_any_origin_with_credentials_is_refused_in_every_environment(
    origins: dict[str, str],
) -> None:
    message = config_error({**DEV, **origins, "PCF_CORS__ALLOW_CREDENTIALS": "true"})
    assert "cors.allow_origins: '*' together with cors.allow_credentials" in message
    assert load({**DEV, **origins}).settings.cors.allow_credentials is False


def test_only_trusted_documents_needs_a_manifest() -> None:
    message = config_error({**DEV, "PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS": "true"})
    assert "graphql.only_trusted_documents: needs graphql.trusted_documents" in message
