"""Process lifecycle of a real `pcf-api serve`: drain on SIGTERM, graceful exit, clear failures."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from support.databases import postgres_database
from support.rawhttp import RawConnection
from support.servers import DEV_JSON, PCF_API, ServerFactory, clean_environ

IN_FLIGHT = 20
DELAY = 4.0
DRAIN = 2.0


def _connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_then_refuses_new_connections_and_finishes_in_flight_requests(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_SERVER__DRAIN_SECONDS": str(DRAIN),
            "PCF_SERVER__SHUTDOWN_TIMEOUT": "20",
            "PCF_TESTING__DELAY_SECONDS": str(DELAY),
            "PCF_TESTING__DELAY_PATHS": "/version",
        }
    )
    server.wait_until_ready()
    assert httpx.get(f"{server.url}/health/ready").status_code == 200

    def slow_request(_: int) -> int:
        # One connection per request, like 20 separate clients.
        with httpx.Client(timeout=30) as client:
            return client.get(f"{server.url}/version").status_code

    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        started = time.monotonic()
        futures = [pool.submit(slow_request, i) for i in range(IN_FLIGHT)]
        time.sleep(0.7)  # all 20 are inside the delayed route now
        server.terminate()
        signalled = time.monotonic()

        during_drain = httpx.get(f"{server.url}/health/ready", timeout=2)
        assert time.monotonic() - signalled < DRAIN
        assert during_drain.status_code == 503
        assert during_drain.json()["status"] == "unhealthy"
        assert httpx.get(f"{server.url}/health", timeout=2).status_code == 200

        time.sleep(max(0.0, signalled + DRAIN + 0.5 - time.monotonic()))
        assert not any(f.done() for f in futures), "requests finished before the listener closed"
        assert _connection_refused(server.port)

        statuses = [future.result(timeout=30) for future in futures]
    assert statuses == [200] * IN_FLIGHT
    assert time.monotonic() - started >= DELAY

    assert server.wait(timeout=30) == 0
    lines = server.log_lines()
    assert lines[-1]["message"] == "stopped"
    assert lines[-1]["signal"] == "SIGTERM"
    assert lines[-1]["level"] == "INFO"


LOOPING_CLIENTS = 50


@dataclass
class _Tally:
    """What one looping client saw."""

    completed: int = 0
    in_drain: int = 0
    kept_open_in_drain: int = 0
    cut_mid_request: list[str] = field(default_factory=list)
    refused_at: float | None = None


async def _loop_on_keep_alive(port: int, signalled: list[float]) -> _Tally:
    """Request `/health` over one keep-alive connection after another until refused."""
    loop = asyncio.get_running_loop()
    tally = _Tally()
    connection: RawConnection | None = None
    while True:
        if connection is None:
            try:
                connection = await RawConnection.open(port)
            except ConnectionRefusedError:
                tally.refused_at = loop.time()
                return tally
        sent = loop.time()
        try:
            reply = await connection.request()
        except ConnectionError as exc:  # the request was sent: this one is lost
            tally.cut_mid_request.append(repr(exc))
            connection.close()
            connection = None
            continue
        tally.completed += 1
        if signalled and sent > signalled[0] + 0.1:  # the server has seen the signal
            tally.in_drain += 1
            tally.kept_open_in_drain += not reply.closes
        if reply.closes:
            connection.close()
            connection = None


@pytest.mark.host_only  # the drain's socket filter needs CAP_NET_ADMIN
def test_sigterm_under_keep_alive_load_loses_no_request_and_closes_every_drained_connection(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_SERVER__DRAIN_SECONDS": str(DRAIN), "PCF_LOG__LEVEL": "WARNING"}
    )
    server.wait_until_ready()

    async def scenario() -> tuple[list[_Tally], float]:
        loop = asyncio.get_running_loop()
        signalled: list[float] = []
        clients = [
            asyncio.ensure_future(_loop_on_keep_alive(server.port, signalled))
            for _ in range(LOOPING_CLIENTS)
        ]
        await asyncio.sleep(1.0)
        server.terminate()
        signalled.append(loop.time())
        async with asyncio.timeout(DRAIN + 20):
            return await asyncio.gather(*clients), signalled[0]

    tallies, signalled = asyncio.run(scenario())
    assert [cut for tally in tallies for cut in tally.cut_mid_request] == []
    assert all(tally.in_drain > 0 for tally in tallies), "every client kept being served"
    assert sum(tally.kept_open_in_drain for tally in tallies) == 0
    refused = [tally.refused_at for tally in tallies if tally.refused_at is not None]
    assert len(refused) == LOOPING_CLIENTS
    assert min(refused) >= signalled + DRAIN - 0.05, "the listener closed before the drain ended"
    assert server.wait(timeout=30) == 0


def test_sigint_also_stops_gracefully_with_exit_code_zero(server_factory: ServerFactory) -> None:
    server = server_factory(DEV_JSON)
    server.wait_until_ready()
    server.terminate(signal.SIGINT)
    assert server.wait(timeout=20) == 0
    assert server.log_lines()[-1]["signal"] == "SIGINT"


def test_once_started_the_garbage_collector_is_settled_with_the_configured_threshold(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({**DEV_JSON, "PCF_SERVER__GC_YOUNG_THRESHOLD": "12345"})
    server.wait_until_ready()
    server.terminate()
    assert server.wait(timeout=20) == 0
    lines = server.log_lines()
    settled = [line for line in lines if line["message"] == "garbage collector settled"]
    assert len(settled) == 1
    assert settled[0]["young_threshold"] == 12345
    assert settled[0]["frozen_objects"] > 10_000  # the imports and the application


def test_a_young_threshold_of_zero_leaves_the_garbage_collector_as_python_sets_it(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({**DEV_JSON, "PCF_SERVER__GC_YOUNG_THRESHOLD": "0"})
    server.wait_until_ready()
    server.terminate()
    assert server.wait(timeout=20) == 0
    messages = [line["message"] for line in server.log_lines()]
    assert "listening" in messages
    assert "garbage collector settled" not in messages


def test_port_in_use_is_one_fatal_line_and_a_nonzero_exit(server_factory: ServerFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = server_factory({**DEV_JSON, "PCF_SERVER__PORT": str(port)})
        assert server.wait(timeout=20) == 1
    fatal = [line for line in server.log_lines() if line["level"] == "FATAL"]
    assert len(fatal) == 1
    assert fatal[0]["message"] == "cannot listen"
    assert fatal[0]["port"] == port
    assert "in use" in fatal[0]["reason"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PCF_ENVIRONMENT": "production"}, "database.url"),
        ({"PCF_ENVIRONMENT": "development", "PCF_SERVER__PORT": "eighty"}, "PCF_SERVER__PORT"),
        (
            {"PCF_ENVIRONMENT": "production", "PCF_AUTH__DEMO_USER": "alice"},
            "auth.demo_user (env PCF_AUTH__DEMO_USER)",
        ),
    ],
)
def test_unusable_configuration_logs_one_fatal_json_line_and_exits_2(
    server_factory: ServerFactory, env: dict[str, str], named: str
) -> None:
    server = server_factory(env)
    assert server.wait(timeout=20) == 2
    lines = server.log_lines()
    assert len(lines) == 1
    assert lines[0]["level"] == "FATAL"
    assert named in lines[0]["message"]


def test_production_serves_only_once_the_schema_is_migrated(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    secret_file = tmp_path / "hs256"
    secret_file.write_text("x" * 48 + "\n")
    with postgres_database() as url:
        env = {
            "PCF_ENVIRONMENT": "production",
            "PCF_SERVER__HOST": "127.0.0.1",
            "PCF_SERVER__DRAIN_SECONDS": "0",
            "PCF_DATABASE__URL": url,
            "PCF_AUTH__HS256_SECRET_FILE": str(secret_file),
        }
        server = server_factory(env)
        server.wait_until_serving()
        time.sleep(1.5)
        ready = httpx.get(f"{server.url}/health/ready")
        assert (ready.status_code, ready.json()["status"]) == (503, "starting")
        query = httpx.post(f"{server.url}/graphql", json={"query": "{ notes { totalCount } }"})
        assert query.status_code == 503
        assert query.headers["retry-after"] == "5"

        migrate = subprocess.run(
            [str(PCF_API), "migrate"], env=clean_environ(env), capture_output=True, check=False
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        server.wait_until_ready(timeout=15)
        token = jwt.encode({"sub": "alice", "exp": time.time() + 600}, "x" * 48, "HS256")
        query = httpx.post(
            f"{server.url}/graphql",
            json={"query": "{ notes { totalCount } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert query.json() == {"data": {"notes": {"totalCount": 0}}}
        server.terminate()
        assert server.wait(timeout=20) == 0
    lines = server.log_lines()
    assert all(line["level"] != "FATAL" for line in lines)
    assert any("waiting for `pcf-api migrate`" in line["message"] for line in lines)


def test_a_second_signal_stops_at_once_with_exit_code_1_and_says_so(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_SERVER__DRAIN_SECONDS": "30",
            "PCF_TESTING__DELAY_SECONDS": "30",
            "PCF_TESTING__DELAY_PATHS": "/version",
        }
    )
    server.wait_until_ready()
    server.terminate()
    time.sleep(0.5)
    server.terminate(signal.SIGINT)
    started = time.monotonic()
    assert server.wait(timeout=20) == 1
    assert time.monotonic() - started < 10
    last = server.log_lines()[-1]
    assert (last["level"], last["message"]) == (
        "ERROR",
        "stopped without waiting for in-flight requests",
    )
    assert any(line["message"].startswith("second signal") for line in server.log_lines())


def test_serves_on_ipv6_loopback(server_factory: ServerFactory) -> None:
    server = server_factory({**DEV_JSON, "PCF_SERVER__HOST": "::1"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://[::1]:{server.port}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    assert response.status_code == 200
    server.terminate()
    assert server.wait(timeout=20) == 0
