"""Specification of ``pcf-api config show``, ``pcf-api version`` and argument handling.

Commands run in-process through ``pcf_api.cli.main``; ``serve`` and ``healthcheck`` are tested
elsewhere. The real environment is cleared of PCF_* variables so only what a test sets counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog

from pcf_api import cli
from pcf_api.auth.tokens import TokenVerifier
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


def settings_lines(out: str) -> list[str]:
    """The ``key = value # source`` lines of ``config show``'s text, without its comments."""
    return [line for line in out.splitlines() if not line.startswith("#")]


def refusal(out: str) -> list[str]:
    """The problems ``config show`` lists after the settings of a refused configuration."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# refused ("))
    return [line.removeprefix("#   ") for line in lines[start + 1 :]]


def fatal_line(out: str) -> dict[str, Any]:
    """The single FATAL JSON log line an unusable configuration produces (stderr for
    ``config show``)."""
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
    for command in ("serve", "healthcheck", "config", "migrate", "schema", "token", "version"):
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
    for line in settings_lines(out):
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

    lines = settings_lines(out)
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
def test_an_invalid_environment_variable_is_listed_after_the_settings_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_SERVER__PORT", "abc")

    code, out, err = run(capsys, "config", "show")

    assert code == cli.EXIT_CONFIG == 2
    rows = [line.split() for line in settings_lines(out)]
    assert [row[0] for row in rows] == list(known_keys())
    assert ["server.port", "=", '"abc"', "#", "env", "PCF_SERVER__PORT"] in rows
    assert ["server.host", "=", '"0.0.0.0"', "#", "profile", "production"] in rows
    (problem,) = refusal(out)
    assert problem.startswith("server.port = 'abc' (env PCF_SERVER__PORT)")
    assert err == ""


@pytest.mark.usefixtures("production")
def test_an_invalid_configuration_as_json_is_shown_and_logged_as_one_fatal_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_SERVER__PORT", "abc")

    code, out, err = run(capsys, "config", "show", "--format", "json")

    assert code == 2
    document = json.loads(out)
    assert list(document) == list(known_keys())
    assert document["server.port"] == {"value": '"abc"', "source": "env PCF_SERVER__PORT"}
    record = fatal_line(err)
    assert "PCF_SERVER__PORT" in record["message"]
    assert len(record["problems"]) == 1
    assert record["problems"][0].startswith("server.port = 'abc' (env PCF_SERVER__PORT)")


def test_config_show_names_the_environment_it_assumed_and_how_to_pick_another(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "config", "show")

    assert code == 2  # production without a database URL
    first = out.splitlines()[0]
    assert first.startswith('# environment "production" (default)')
    assert "--environment development" in first
    assert refusal(out) == [
        "database.url: required in production (set PCF_DATABASE__URL or PCF_DATABASE__URL_FILE)"
    ]


def test_config_show_names_a_chosen_environment_without_advice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_ENVIRONMENT", "development")

    code, out, _ = run(capsys, "config", "show")

    assert code == 0
    assert out.splitlines()[0] == '# environment "development" (env PCF_ENVIRONMENT)'
    assert "# refused" not in out


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
    code, _, err = run(capsys, "config", "show", "--format", "json", *argv)

    assert code == 2
    assert expected in fatal_line(err)["message"]


def test_an_unreadable_config_file_exits_2_naming_the_file_and_still_shows_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.toml"
    monkeypatch.setenv("PCF_SERVER__PORT", "9100")

    code, out, _ = run(capsys, "config", "show", "--config", str(missing))

    assert code == 2
    assert refusal(out)[0].startswith(f"config file {missing}: cannot be read")
    assert "9100" in next(line for line in out.splitlines() if line.startswith("server.port"))


def test_an_unsafe_production_configuration_exits_2_naming_every_problem_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = "weak-Hs256-value"
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET", weak)
    monkeypatch.setenv("PCF_AUTH__DEMO_USER", "demo")

    code, out, err = run(capsys, "config", "show", "--format", "json")

    assert code == 2
    record = fatal_line(err)
    assert [problem.split(" ")[0].rstrip(":") for problem in record["problems"]] == [
        "auth.demo_user",
        "database.url",
        "auth.hs256_secret",
    ]
    assert json.loads(out)["auth.hs256_secret"] == {
        "value": "<redacted>",
        "source": "env PCF_AUTH__HS256_SECRET",
    }
    assert weak not in out + err


@pytest.mark.parametrize("output_format", ["text", "json"])
def test_an_invalid_secret_in_toml_is_not_echoed(
    output_format: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pcf-api.toml"
    config.write_text(f"[database]\nurl = ['{DB_URL}']\n", encoding="utf-8")

    code, out, err = run(
        capsys, "config", "show", "--config", str(config), "--format", output_format
    )

    assert code == 2
    assert "database.url" in out + err
    assert DB_PASSWORD not in out + err


def test_the_cli_flags_map_onto_settings_keys() -> None:
    assert cli._FLAG_KEYS == {
        "environment": "environment",
        "host": "server.host",
        "port": "server.port",
        "log_level": "log.level",
        "log_format": "log.format",
    }
    assert set(cli._FLAG_KEYS.values()) <= set(known_keys())


# --- token ---------------------------------------------------------------------------------------


def verified_subject(
    token: str, secret: str, issuer: str | None = None, audience: str | None = None
) -> str:
    """The subject the service's own verifier reads from ``token``, as a server configured with
    this secret, issuer and audience would."""
    verifier = TokenVerifier(
        algorithms={"HS256"}, hs256_secret=secret, issuer=issuer, audience=audience
    )
    return asyncio.run(verifier.verify(token)).subject


def test_token_mints_a_token_the_service_accepts_from_the_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "hs256-secret"
    secret_file.write_text(HS256_SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET_FILE", str(secret_file))
    monkeypatch.setenv("PCF_AUTH__ISSUER", "https://issuer.test")
    monkeypatch.setenv("PCF_AUTH__AUDIENCE", "pcf-api")

    code, out, err = run(capsys, "token", "--sub", "alice", "--environment", "development")

    assert (code, err) == (0, "")
    token = out.strip()
    assert out == token + "\n"
    subject = verified_subject(
        token, HS256_SECRET, issuer="https://issuer.test", audience="pcf-api"
    )
    assert subject == "alice"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert HS256_SECRET not in out


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("90", 90), ("45s", 45), ("15m", 900), ("2d", 172800)]
)
def test_token_lifetime_follows_ttl(
    ttl: str, seconds: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCF_AUTH__HS256_SECRET", HS256_SECRET)

    code, out, _ = run(
        capsys, "token", "--sub", "bob", "--ttl", ttl, "--environment", "development"
    )

    assert code == 0
    claims = jwt.decode(out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == seconds


@pytest.mark.usefixtures("production")
def test_token_in_production_is_refused_without_the_confirmation_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "token", "--sub", "alice")

    assert code == 2
    assert out == ""
    assert "--allow-production" in err


@pytest.mark.usefixtures("production")
def test_token_in_production_is_minted_with_the_confirmation_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "token", "--sub", "alice", "--allow-production")

    assert code == 0
    assert verified_subject(out.strip(), HS256_SECRET) == "alice"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        pytest.param([], {}, "No HS256 secret is configured", id="no-secret"),
        pytest.param(["--ttl", "1w"], {"PCF_AUTH__HS256_SECRET": HS256_SECRET}, "'1w'", id="ttl"),
        pytest.param(
            ["--ttl", "8d"], {"PCF_AUTH__HS256_SECRET": HS256_SECRET}, "at most 7 days", id="long"
        ),
        pytest.param(
            [],
            {"PCF_AUTH__HS256_SECRET": HS256_SECRET, "PCF_AUTH__ALGORITHMS": "RS256"},
            "HS256 is not among auth.algorithms",
            id="hs256-not-allowed",
        ),
    ],
)
def test_token_that_cannot_be_minted_exits_2_saying_why(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code, out, err = run(capsys, "token", "--sub", "alice", "--environment", "development", *argv)

    assert code == 2
    assert out == ""
    assert message in err
    assert HS256_SECRET not in err


def test_token_with_an_unusable_configuration_exits_2_with_the_fatal_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "token", "--sub", "alice", "--allow-production")

    assert code == 2
    assert out == ""
    assert "database.url" in fatal_line(err)["message"]
