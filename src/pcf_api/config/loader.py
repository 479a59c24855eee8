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
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pcf_api.config.policy import inconsistent_settings, unsafe_settings
from pcf_api.config.provenance import LoadedSettings, Source
from pcf_api.config.schema import FILE_SUFFIX, Settings, known_keys

ENV_PREFIX = "PCF_"
CONFIG_FILE_ENV = "PCF_CONFIG"

PROFILE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "development": {
        "server.host": "127.0.0.1",
        "log.format": "console",
        "auth.demo_user": "demo",
        "database.url": "sqlite+aiosqlite:///./data/pcf-api.db",
        "database.auto_migrate": True,
        "graphql.introspection": True,
        "graphql.graphiql": True,
        # A web app on the developer's machine, whatever its port.
        "cors.allow_origin_regex": r"^http://(localhost|127\.0\.0\.1)(:\d+)?$",
        "log.client_ip": "full",
        "log.subject": "raw",
        "log.audit_subject": "raw",
        "log.tracebacks": True,
    },
    "staging": {"server.host": "0.0.0.0", "log.format": "json"},
    "production": {
        "server.host": "0.0.0.0",
        "log.format": "json",
        # Private by default (docs/operations.md, "Logs"); the schema's defaults are the same.
        "log.client_ip": "subnet",
        "log.subject": "hash",
        "log.audit_subject": "hash",
        "log.tracebacks": False,
    },
}

PORT_ENV = "PORT"
"""The port platforms such as Cloud Run and Heroku set; PCF_SERVER__PORT and --port win."""


class ConfigError(Exception):
    """The configuration cannot be used; each problem names its key and layer.

    ``draft`` is what ``redacted_view`` would show for it, as far as the layers could be read
    (values as given, secrets redacted), so ``pcf-api config show`` can show a configuration
    exactly when it is wrong.
    """

    def __init__(
        self, problems: list[str], draft: list[tuple[str, str, Source]] | None = None
    ) -> None:
        self.problems = problems
        self.draft = draft or []
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
    upper_layers = [toml_layer, env_layer, cli_layer]
    environment = _pick_environment(upper_layers)
    profile_layer: Layer = {
        key: (value, Source("profile", environment))
        for key, value in PROFILE_DEFAULTS.get(environment, {}).items()
    }
    merged: Layer = {}
    for layer in [profile_layer, *upper_layers]:
        merged.update(layer)
    if problems:
        raise ConfigError(problems, _draft_view(merged))

    flat = _resolve_secret_files(merged, problems)
    if problems:
        raise ConfigError(problems, _draft_view(merged))
    sources = {key: source for key, (_, source) in merged.items()}
    try:
        settings = Settings.model_validate(_unflatten(flat))
    except ValidationError as exc:
        problems = _describe_validation_errors(exc, merged)
        raise ConfigError(problems, _draft_view(merged)) from None

    loaded = LoadedSettings(settings=settings, sources=sources)
    unsafe = inconsistent_settings(settings) + unsafe_settings(settings, sources)
    if unsafe:
        raise ConfigError(unsafe, redacted_view(loaded))
    return loaded


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
    if PORT_ENV in environ and "server.port" not in layer:
        layer["server.port"] = (environ[PORT_ENV], Source("env", PORT_ENV))
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


def _draft_view(merged: Layer) -> list[tuple[str, str, Source]]:
    """Like ``redacted_view`` for settings that did not validate: each value as given."""
    defaults = Settings().model_dump()
    rows = []
    for key, secret in known_keys().items():
        section, _, name = key.partition(".")
        value, source = merged.get(key, (None, Source("default")))
        if key not in merged:
            value = defaults[section][name] if name else defaults[section]
        shown = _format_secret(value) if secret else _format_value(value)
        rows.append((key, shown, source))
    return rows


def _format_secret(value: Any) -> str:
    return "<unset>" if value is None else "<redacted>"


def _format_value(value: Any) -> str:
    if value is None:
        return "<unset>"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, default=str)
