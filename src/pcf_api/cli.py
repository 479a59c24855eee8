"""``pcf-api``: serve | healthcheck | config show | migrate | schema | token | version.

Imports are deferred to each command so ``pcf-api healthcheck`` loads only the standard library.
Exit codes: 0 success, 1 runtime failure, 2 unusable configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_CONFIG = 2


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file (else PCF_CONFIG)")
    parser.add_argument("--environment", choices=["development", "staging", "production"])
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument("--port", help="port to listen on (server.port)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARN, ERROR or FATAL (log.level)")
    parser.add_argument("--log-format", help="json or console (log.format)")


_FLAG_KEYS = {
    "environment": "environment",
    "host": "server.host",
    "port": "server.port",
    "log_level": "log.level",
    "log_format": "log.format",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcf-api", description="GraphQL notes API server.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    _add_settings_flags(serve)

    health = commands.add_parser("healthcheck", help="probe a running server (exit 0, 1 or 2)")
    health.add_argument("--ready", action="store_true", help="probe readiness instead of liveness")
    health.add_argument("--url", help="full URL to probe (default: the local server)")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")

    config = commands.add_parser("config", help="inspect configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser(
        "show", help="effective settings, secrets redacted, with sources"
    )
    _add_settings_flags(show)
    show.add_argument("--format", dest="output_format", choices=["text", "json"], default="text")

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    _add_settings_flags(migrate)

    commands.add_parser("schema", help="print the GraphQL schema (SDL)")

    token = commands.add_parser(
        "token", help="mint an HS256 bearer token from the configured secret"
    )
    token.add_argument("--sub", required=True, help="the token's subject: the caller's user id")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 2d (default 1h)")
    token.add_argument(
        "--allow-production",
        action="store_true",
        help="confirm minting in the production environment",
    )
    _add_settings_flags(token)

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "healthcheck": _healthcheck,
        "config": _config_show,
        "migrate": _migrate,
        "schema": _schema,
        "token": _token,
        "version": _version,
    }
    return commands[args.command](args)


def _version(_: argparse.Namespace) -> int:
    from pcf_api import __version__

    print(__version__)
    return 0


def _schema(_: argparse.Namespace) -> int:
    from pcf_api.graphql.schema import build_schema

    print(build_schema().as_str())
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    from pcf_api.healthcheck import default_url, probe

    outcome = probe(args.url or default_url(args.ready), args.timeout)
    print(outcome.summary)
    return outcome.exit_code


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: getattr(args, flag)
        for flag, key in _FLAG_KEYS.items()
        if getattr(args, flag) is not None
    }


def _load(args: argparse.Namespace, stream: TextIO | None = None) -> Any:
    """Validated settings, or None after logging one FATAL line naming every problem."""
    from pcf_api.config import ConfigError, load_settings

    _json_logging(stream)
    try:
        return load_settings(config_file=args.config, cli=_cli_overrides(args))
    except ConfigError as exc:
        _log_fatal(exc.problems)
        return None


def _json_logging(stream: TextIO | None) -> None:
    from pcf_api.observability.logging import configure_logging

    configure_logging(log_format="json", stream=stream)


def _log_fatal(problems: list[str]) -> None:
    from pcf_api.observability.logging import get_logger

    get_logger("pcf_api.config").critical(
        "invalid configuration: " + "; ".join(problems), problems=problems
    )


def _config_show(args: argparse.Namespace) -> int:
    """The effective settings, also when they are refused: that is when they are needed most.

    Text lists the problems after the settings; JSON keeps stdout one document and logs the
    problems as the usual FATAL line on stderr. Either way the exit code is 2 when refused.
    """
    import json

    from pcf_api.config import ConfigError, load_settings, redacted_view

    _json_logging(sys.stderr)
    try:
        loaded = load_settings(config_file=args.config, cli=_cli_overrides(args))
        rows, problems = redacted_view(loaded), []
    except ConfigError as exc:
        rows, problems = exc.draft, exc.problems
    if args.output_format == "json":
        document = {key: {"value": value, "source": str(source)} for key, value, source in rows}
        print(json.dumps(document, indent=2))
        if problems:
            _log_fatal(problems)
    else:
        _print_settings(rows, problems)
    return EXIT_CONFIG if problems else 0


def _print_settings(rows: list[tuple[str, str, Any]], problems: list[str]) -> None:
    environment = {key: (value, source) for key, value, source in rows}.get("environment")
    if environment is not None:
        value, source = environment
        note = _ENVIRONMENT_NOTE if str(source) == "default" else ""
        print(f"# environment {value} ({source}){note}")
    width = max((len(key) for key, _, _ in rows), default=0)
    for key, value, source in rows:
        print(f"{key:<{width}} = {value:<40} # {source}")
    if problems:
        print(f"# refused ({len(problems)} problem{'s' * (len(problems) > 1)}, exit code 2):")
        for problem in problems:
            print(f"#   {problem}")


_ENVIRONMENT_NOTE = (
    ": the image's default; a checkout runs with --environment development "
    "or PCF_ENVIRONMENT=development, as `make run` does"
)


def _token(args: argparse.Namespace) -> int:
    from pcf_api.auth.minting import MintError, mint_hs256, parse_duration

    loaded = _load(args, sys.stderr)
    if loaded is None:
        return EXIT_CONFIG
    settings = loaded.settings
    if settings.environment == "production" and not args.allow_production:
        print(
            "Minting a token in production is refused without --allow-production: a token "
            "signed with the service's secret is valid for any subject it names.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        print(mint_hs256(settings.auth, args.sub, parse_duration(args.ttl)))
    except MintError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from pcf_api.secretfiles import SecretFiles
    from pcf_api.store.migrate import run_migrations

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    _configure_from(loaded.settings)
    secrets = SecretFiles.from_settings(loaded.settings)
    return asyncio.run(run_migrations(loaded.settings.database, secrets))


def _configure_from(settings: Any) -> None:
    from pcf_api.observability.logging import configure_from_settings

    configure_from_settings(settings)


def _serve(args: argparse.Namespace) -> int:
    from pcf_api import __version__
    from pcf_api.server import run

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    _configure_from(loaded.settings)
    return run(loaded.settings, version=__version__)


def entrypoint() -> None:
    sys.exit(main())
