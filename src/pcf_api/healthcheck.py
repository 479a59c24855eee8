"""``pcf-api healthcheck``: probe the local server with the standard library only.

It runs inside a shell-less image as a container HEALTHCHECK, so it imports nothing beyond the
standard library and finishes within its timeout. Exit codes: 0 healthy or degraded, 1 unhealthy
(any answer other than 200, or no answer in time), 2 cannot connect.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 2

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    summary: str


def default_url(ready: bool, environ: dict[str, str] | None = None) -> str:
    """The local server's URL from PCF_SERVER__HOST/PORT or the PCF_CONFIG file, as serve uses."""
    environ = dict(os.environ) if environ is None else environ
    server: dict[str, object] = {}
    config_file = environ.get("PCF_CONFIG")
    if config_file:
        try:
            server = tomllib.loads(Path(config_file).read_text(encoding="utf-8")).get("server", {})
        except (OSError, tomllib.TOMLDecodeError):
            server = {}
    host = str(environ.get("PCF_SERVER__HOST", server.get("host", "")))
    port = str(environ.get("PCF_SERVER__PORT", server.get("port", 8080)))
    host = _WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health" + ("/ready" if ready else "")


def probe(url: str, timeout: float) -> Outcome:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Outcome(EXIT_UNREACHABLE, f"not an http(s) URL: {url}")
    deadline = time.monotonic() + timeout
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            connection.connect()
        except OSError as exc:
            return Outcome(EXIT_UNREACHABLE, f"cannot connect to {url}: {exc}")
        if connection.sock is not None:
            connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            connection.request(
                "GET", parts.path or "/", headers={"User-Agent": "pcf-api-healthcheck"}
            )
            response = connection.getresponse()
            body = response.read(65536)
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(EXIT_UNHEALTHY, f"no answer from {url} within {timeout:g} s: {exc}")
    finally:
        connection.close()
    status = _status_word(body) or ("ok" if response.status == 200 else "unhealthy")
    code = EXIT_HEALTHY if response.status == 200 else EXIT_UNHEALTHY
    return Outcome(code, f"{status} (HTTP {response.status})")


def _status_word(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    status = document.get("status") if isinstance(document, dict) else None
    return status if isinstance(status, str) else None
