"""`pcf-api healthcheck` against real servers: exit 0 healthy, 1 unhealthy, 2 cannot connect."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.servers import DEV_JSON, PCF_API, ServerFactory, clean_environ, free_port


def healthcheck(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(PCF_API), "healthcheck", *args],
        env=clean_environ(env or {}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def test_healthy_server_exits_0_for_liveness_and_readiness(server_factory: ServerFactory) -> None:
    server = server_factory(DEV_JSON)
    server.wait_until_ready()
    assert healthcheck("--url", f"{server.url}/health")[0] == 0
    code, output, _ = healthcheck("--url", f"{server.url}/health/ready")
    assert (code, output.strip()) == (0, "healthy (HTTP 200)")


def test_default_url_follows_the_configured_port(server_factory: ServerFactory) -> None:
    server = server_factory(DEV_JSON)
    server.wait_until_ready()
    env = {"PCF_SERVER__PORT": str(server.port)}
    assert healthcheck(env=env)[0] == 0
    assert healthcheck("--ready", env=env)[0] == 0


def test_draining_server_is_unhealthy_exit_1(server_factory: ServerFactory) -> None:
    server = server_factory({**DEV_JSON, "PCF_SERVER__DRAIN_SECONDS": "10"})
    server.wait_until_ready()
    server.terminate()
    deadline = time.monotonic() + 5
    code, output = -1, ""
    while time.monotonic() < deadline:
        code, output, _ = healthcheck("--ready", "--url", f"{server.url}/health/ready")
        if code == 1:
            break
    assert code == 1, output
    assert output.strip() == "unhealthy (HTTP 503)"
    # Liveness stays green while draining: Kubernetes must not restart a pod that is stopping.
    assert healthcheck("--url", f"{server.url}/health")[0] == 0


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "unhealthy"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def unavailable_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/health/ready"
    httpd.shutdown()
    httpd.server_close()


def test_server_answering_503_exits_1(unavailable_server: str) -> None:
    code, output, _ = healthcheck("--url", unavailable_server)
    assert (code, output.strip()) == (1, "unhealthy (HTTP 503)")


def test_server_that_accepts_but_never_answers_exits_1_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, _, elapsed = healthcheck("--timeout", "1", "--url", f"http://127.0.0.1:{port}/health")
    assert code == 1
    assert elapsed < 4


def test_nothing_listening_exits_2() -> None:
    code, output, elapsed = healthcheck("--url", f"http://127.0.0.1:{free_port()}/health")
    assert code == 2
    assert "cannot connect" in output
    assert elapsed < 4


def test_non_http_url_exits_2() -> None:
    assert healthcheck("--url", "ftp://127.0.0.1/health")[0] == 2
