"""Specification of ``pcf-api config show``, ``pcf-api version`` and argument handling.

Commands run in-process through ``pcf_api.cli.main``; ``serve`` and ``healthcheck`` are tested
elsewhere. The real environment is cleared of PCF_* variables so only what a test sets counts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import structlog

from pcf_api import cli
from pcf_api.config import known_keys

HS256_SECRET = "cli-test-Hs256-secret-0123456789abcdef"
DB_PASSWORD = "cliDbPassw0rd-77"
DB_URL = f"postgresql://app:{DB_PASSWORD}@db/pcf"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PCF_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI points logging at the captured stdout; undo that for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCF_DATABASE__URL", DB_URL)
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET", HS256_SECRET)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, _ = run(capsys, "config", "show", "--format", "json", *argv)
    assert code == 0, out
    document: dict[str, Any] = json.loads(out)
    return document


def fatal_line(out: str) -> dict[str, Any]:
    """The single FATAL JSON log line an unusable configuration produces on stdout."""
    lines = out.splitlines()
    assert len(lines) == 1, out
    record: dict[str, Any] = json.loads(lines[0])
    assert record["level"] == "FATAL"
    assert record["module"] == "pcf_api.config"
    assert record["message"].startswith("invalid configuration: ")
    return record


# --- version and argument handling ------------------------------------------------------------


def test_version_prints_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "version")

    assert code == 0
    assert out == version("pcf-api") + "\n"
    assert err == ""


def test_the_console_script_exits_with_the_commands_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["pcf-api", "version"])

    with pytest.raises(SystemExit) as exited:
        cli.entrypoint()

    assert exited.value.code == 0
    assert capsys.readouterr().out == version("pcf-api") + "\n"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["config"], id="config-without-subcommand"),
        pytest.param(["config", "edit"], id="unknown-config-subcommand"),
        pytest.param(["config", "show", "--format", "yaml"], id="unknown-output-format"),
        pytest.param(["config", "show", "--environment", "dev"], id="unknown-environment"),
        pytest.param(["config", "show", "--no-such-flag"], id="unknown-flag"),
        pytest.param(["version", "--port", "1"], id="settings-flag-on-version"),
    ],
)
def test_usage_errors_exit_with_code_2_and_explain_on_stderr(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: pcf-api" in err


def test_help_exits_with_code_0_and_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "healthcheck", "config", "version"):
        assert command in out


def test_config_show_help_lists_the_settings_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["config", "show", "--help"])

    out = capsys.readouterr().out
    for flag in ("--config", "--environment", "--host", "--port", "--log-level", "--log-format"):
        assert flag in out


# --- config show: output ----------------------------------------------------------------------


@pytest.mark.usefixtures("production")
def test_config_show_lists_every_setting_with_its_value_and_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "config", "show", "--port", "9000")

    assert code == 0
    rows = {}
    for line in out.splitlines():
        setting, _, source = line.partition(" # ")
        key, _, value = setting.partition(" = ")
        rows[key.strip()] = (value.strip(), source)
    assert list(rows) == list(known_keys())
    assert rows["server.port"] == ("9000", "cli --port")
    assert rows["server.host"] == ('"0.0.0.0"', "profile production")
    assert rows["environment"] == ('"production"', "default")
    assert rows["auth.hs256_secret"] == ("<redacted>", "env PCF_AUTH__HS256_SECRET")
    assert rows["database.url"] == ("<redacted>", "env PCF_DATABASE__URL")
    assert rows["auth.jwks_url"] == ("<unset>", "default")


@pytest.mark.usefixtures("production")
def test_config_show_aligns_its_columns(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "config", "show")

    lines = out.splitlines()
    assert len({line.index(" = ") for line in lines}) == 1
    assert len({line.index(" # ") for line in lines}) == 1


@pytest.mark.usefixtures("production")
def test_config_show_as_json_gives_value_and_source_per_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = show_json(capsys, "--log-level", "warn")

    assert list(document) == list(known_keys())
    assert document["log.level"] == {"value": '"WARNING"', "source": "cli --log-level"}
    assert document["server.port"] == {"value": "8080", "source": "default"}
    assert document["auth.hs256_secret"] == {
        "value": "<redacted>",
        "source": "env PCF_AUTH__HS256_SECRET",
    }
    assert document["auth.hs256_secret_file"] == {"value": "<unset>", "source": "default"}


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("output_format", ["text", "json"])
def test_config_show_never_prints_a_secret(
    output_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "config", "show", "--format", output_format)

    assert code == 0
    assert "<redacted>" in out
    for secret in (HS256_SECRET, DB_URL, DB_PASSWORD):
        assert secret not in out
        assert secret not in err


def test_config_show_redacts_secrets_read_from_files_and_names_the_file_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_path = tmp_path / "hs256"
    secret_path.write_text(HS256_SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET_FILE", str(secret_path))
    monkeypatch.setenv("PCF_DATABASE__URL", DB_URL)

    document = show_json(capsys)

    assert document["auth.hs256_secret"] == {
        "value": "<redacted>",
        "source": "env PCF_AUTH__HS256_SECRET_FILE",
    }
    assert document["auth.hs256_secret_file"]["value"] == json.dumps(str(secret_path))
    assert HS256_SECRET not in json.dumps(document)


def test_config_show_reports_unset_secrets_as_unset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_ENVIRONMENT", "development")

    document = show_json(capsys)

    assert document["auth.hs256_secret"] == {"value": "<unset>", "source": "default"}
    assert document["database.url"] == {"value": "<redacted>", "source": "profile development"}


def test_every_settings_flag_is_named_as_the_source_of_its_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = show_json(
        capsys,
        "--environment",
        "development",
        "--host",
        "10.1.2.3",
        "--port",
        "9001",
        "--log-level",
        "FATAL",
        "--log-format",
        "json",
    )

    assert document["environment"] == {"value": '"development"', "source": "cli --environment"}
    assert document["server.host"] == {"value": '"10.1.2.3"', "source": "cli --host"}
    assert document["server.port"] == {"value": "9001", "source": "cli --port"}
    assert document["log.level"] == {"value": '"CRITICAL"', "source": "cli --log-level"}
    assert document["log.format"] == {"value": '"json"', "source": "cli --log-format"}


@pytest.mark.usefixtures("production")
def test_flags_override_environment_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_SERVER__PORT", "7000")

    without_flag = show_json(capsys)
    with_flag = show_json(capsys, "--port", "7001")

    assert without_flag["server.port"] == {"value": "7000", "source": "env PCF_SERVER__PORT"}
    assert with_flag["server.port"] == {"value": "7001", "source": "cli --port"}


@pytest.mark.usefixtures("production")
def test_config_flag_selects_the_toml_file_over_pcf_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from_env = tmp_path / "from-env.toml"
    from_env.write_text("[server]\nport = 8123\n", encoding="utf-8")
    from_flag = tmp_path / "from-flag.toml"
    from_flag.write_text("[server]\nport = 8456\n", encoding="utf-8")
    monkeypatch.setenv("PCF_CONFIG", str(from_env))

    via_env = show_json(capsys)
    via_flag = show_json(capsys, "--config", str(from_flag))

    assert via_env["server.port"] == {"value": "8123", "source": f"toml {from_env}"}
    assert via_flag["server.port"] == {"value": "8456", "source": f"toml {from_flag}"}


# --- config show: unusable configuration -------------------------------------------------------


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("output_format", ["text", "json"])
def test_an_invalid_environment_variable_exits_2_with_one_fatal_json_line(
    output_format: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_SERVER__PORT", "abc")

    code, out, _ = run(capsys, "config", "show", "--format", output_format)

    assert code == cli.EXIT_CONFIG == 2
    record = fatal_line(out)
    assert "server.port" in record["message"]
    assert "PCF_SERVER__PORT" in record["message"]
    assert len(record["problems"]) == 1
    assert record["problems"][0].startswith("server.port = 'abc' (env PCF_SERVER__PORT)")


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "abc"], "server.port = 'abc' (cli --port)"),
        (["--port", "0"], "server.port = '0' (cli --port)"),
        (["--log-level", "LOUD"], "log.level = 'LOUD' (cli --log-level)"),
        (["--log-format", "xml"], "log.format = 'xml' (cli --log-format)"),
    ],
)
def test_an_invalid_flag_exits_2_naming_the_key_and_the_flag(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "config", "show", *argv)

    assert code == 2
    assert expected in fatal_line(out)["message"]


def test_an_unreadable_config_file_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.toml"

    code, out, _ = run(capsys, "config", "show", "--config", str(missing))

    assert code == 2
    assert f"config file {missing}: cannot be read" in fatal_line(out)["message"]


def test_an_unsafe_production_configuration_exits_2_naming_every_problem_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = "weak-Hs256-value"
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET", weak)
    monkeypatch.setenv("PCF_AUTH__DEMO_USER", "demo")

    code, out, _ = run(capsys, "config", "show", "--format", "json")

    assert code == 2
    record = fatal_line(out)
    assert [problem.split(" ")[0].rstrip(":") for problem in record["problems"]] == [
        "auth.demo_user",
        "database.url",
        "auth.hs256_secret",
    ]
    assert weak not in out


def test_an_invalid_secret_in_toml_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pcf-api.toml"
    config.write_text(f"[database]\nurl = ['{DB_URL}']\n", encoding="utf-8")

    code, out, _ = run(capsys, "config", "show", "--config", str(config))

    assert code == 2
    assert "database.url" in fatal_line(out)["message"]
    assert DB_PASSWORD not in out


def test_the_cli_flags_map_onto_settings_keys() -> None:
    assert cli._FLAG_KEYS == {
        "environment": "environment",
        "host": "server.host",
        "port": "server.port",
        "log_level": "log.level",
        "log_format": "log.format",
    }
    assert set(cli._FLAG_KEYS.values()) <= set(known_keys())
