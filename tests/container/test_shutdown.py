"""SIGTERM to the container while requests are in flight: they all finish, the exit is clean."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import HARDENED, Engine, StartContainer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

IN_FLIGHT = 20
DELAY = 3.0  # each request to /version takes this long (fault injection)
DRAIN = 1.0
SHUTDOWN_TIMEOUT = 10.0


def test_sigterm_with_20_requests_in_flight_drains_and_exits_0(
    engine: Engine, image: str, start: StartContainer
) -> None:
    # Fault injection (a slow /version) is refused outside development, so this one container
    # runs the development profile, with the production log format.
    port = free_port()
    container = start(
        image,
        *HARDENED,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-e",
        "PCF_ENVIRONMENT=development",
        "-e",
        "PCF_SERVER__HOST=0.0.0.0",
        "-e",
        "PCF_LOG__FORMAT=json",
        "-e",
        "PCF_DATABASE__URL=sqlite+aiosqlite:////tmp/notes.db",
        "-e",
        f"PCF_SERVER__DRAIN_SECONDS={DRAIN}",
        "-e",
        f"PCF_SERVER__SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}",
        "-e",
        f"PCF_TESTING__DELAY_SECONDS={DELAY}",
        "-e",
        "PCF_TESTING__DELAY_PATHS=/version",
    )
    url = f"http://127.0.0.1:{port}"
    container.wait_until_healthy(f"{url}/health/ready")

    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        futures = [
            pool.submit(httpx.get, f"{url}/version", timeout=DELAY + SHUTDOWN_TIMEOUT + 10)
            for _ in range(IN_FLIGHT)
        ]
        time.sleep(1.0)  # all 20 are now inside the server, waiting out the delay
        assert not any(future.done() for future in futures)
        signalled = time.monotonic()
        engine.run("kill", "--signal", "TERM", container.name)
        responses = [future.result() for future in futures]
    exit_code = container.wait(timeout=DRAIN + SHUTDOWN_TIMEOUT + 30)
    elapsed = time.monotonic() - signalled

    assert [r.status_code for r in responses] == [200] * IN_FLIGHT
    assert exit_code == 0
    assert elapsed < DRAIN + SHUTDOWN_TIMEOUT
    logs = container.engine.run("logs", container.name).stdout.splitlines()
    records = [json.loads(line) for line in logs]  # every line is one JSON object
    assert any(r.get("signal") == "SIGTERM" and "draining" in r["message"] for r in records)
    last = records[-1]
    assert (last["message"], last["signal"], last["exit_code"]) == ("stopped", "SIGTERM", 0)
