"""With ``metrics.port``, /metrics lives on that port alone, so a NetworkPolicy can expose it
to Prometheus without exposing the API, and the API port no longer serves it."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from support.servers import DEV_JSON, ServerFactory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_metrics_are_served_on_their_own_port_only(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    metrics_port = _free_port()
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_METRICS__PORT": str(metrics_port),
        }
    )
    server.wait_until_ready()
    metrics_url = f"http://127.0.0.1:{metrics_port}"

    scrape = httpx.get(f"{metrics_url}/metrics")
    assert scrape.status_code == 200
    assert "http_request_total" in scrape.text
    assert httpx.get(f"{server.url}/metrics").status_code == 404
    for path in ("/graphql", "/health/ready", "/version"):
        assert httpx.get(f"{metrics_url}{path}").status_code == 404
    assert httpx.get(f"{server.url}/health/ready").status_code == 200


def test_a_taken_metrics_port_is_a_fatal_start_up_error(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = server_factory(
            {
                **DEV_JSON,
                "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
                "PCF_METRICS__PORT": str(port),
            }
        )
        assert server.wait(timeout=20) == 1
    (line,) = [line for line in server.log_lines() if line["level"] == "FATAL"]
    assert line["message"] == "cannot listen"
    assert line["port"] == port
