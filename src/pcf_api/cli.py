"""``pcf-api``: serve | healthcheck | config show | version.

Imports are deferred to each command so ``pcf-api healthcheck`` loads only the standard library.
Exit codes: 0 success, 1 runtime failure, 2 unusable configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "healthcheck":
        return _healthcheck(args)
    if args.command == "version":
        from pcf_api import __version__

        print(__version__)
        return 0
    if args.command == "config":
        return _config_show(args)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "schema":
        from pcf_api.graphql.schema import build_schema

        print(build_schema().as_str())
        return 0
    return _serve(args)


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


def _load(args: argparse.Namespace) -> Any:
    """Validated settings, or None after logging one FATAL line naming every problem."""
    from pcf_api.config import ConfigError, load_settings
    from pcf_api.observability.logging import configure_logging, get_logger

    configure_logging(log_format="json")
    try:
        return load_settings(config_file=args.config, cli=_cli_overrides(args))
    except ConfigError as exc:
        get_logger("pcf_api.config").critical(
            "invalid configuration: " + "; ".join(exc.problems), problems=exc.problems
        )
        return None


def _config_show(args: argparse.Namespace) -> int:
    import json

    from pcf_api.config import redacted_view

    loaded = _load(args)
    if loaded is None:
        return EXIT_CONFIG
    rows = redacted_view(loaded)
    if args.output_format == "json":
        document = {key: {"value": value, "source": str(source)} for key, value, source in rows}
        print(json.dumps(document, indent=2))
    else:
        width = max(len(key) for key, _, _ in rows)
        for key, value, source in rows:
            print(f"{key:<{width}} = {value:<40} # {source}")
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
    from pcf_api.observability.logging import configure_logging

    configure_logging(
        level=settings.log.level,
        log_format=settings.log.format,
        module_levels=settings.log.levels,
        secrets=settings.secret_values(),
    )


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
