"""The image running as it would in a cluster: read-only, no capabilities, uid 65532, tmpfs /tmp."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from support.databases import postgres_database

from .conftest import HARDENED, HS256_SECRET, Engine, StartContainer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

TOKEN = jwt.encode({"sub": "alice", "exp": time.time() + 3600}, HS256_SECRET, "HS256")
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CREATE = 'mutation { createNote(input: {title: "t", content: "c", author: "alice"}) { id } }'
COUNT = "{ notes { totalCount } }"


def graphql(url: str, query: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/graphql", json={"query": query}, headers=BEARER, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def host_uid(engine: Engine, name: str) -> int:
    """The uid the container's main process runs as, read from /proc on the host."""
    pid = engine.run("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(uid_line.split()[1])


def test_serves_health_and_graphql_on_sqlite_hardened(
    engine: Engine, image: str, start: StartContainer
) -> None:
    port = free_port()
    container = start(
        image,
        *HARDENED,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-e",
        "PCF_DATABASE__URL=sqlite+aiosqlite:////tmp/notes.db",
        "-e",
        "PCF_DATABASE__AUTO_MIGRATE=true",
        "-e",
        f"PCF_AUTH__HS256_SECRET={HS256_SECRET}",
    )
    url = f"http://127.0.0.1:{port}"
    container.wait_until_healthy(f"{url}/health/ready")

    health = httpx.get(f"{url}/health")
    assert (health.status_code, health.text) == (200, "OK")
    assert health.headers["content-type"].startswith("text/plain")
    ready = httpx.get(f"{url}/health/ready").json()
    assert ready["status"] == "healthy"
    assert ready["services"]["database"]["status"] == "up"

    note = graphql(url, CREATE)["data"]["createNote"]["id"]
    assert note
    assert graphql(url, COUNT) == {"data": {"notes": {"totalCount": 1}}}

    # The image's own HEALTHCHECK and the probe command inside, both without a shell.
    if engine.is_podman:
        assert engine.run("healthcheck", "run", container.name, check=False).returncode == 0
        assert container.state()["Health"]["Status"] == "healthy"
    probe = container.exec("pcf-api", "healthcheck")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert container.exec("pcf-api", "healthcheck", "--ready").returncode == 0

    if engine.is_podman and os.geteuid() == 0:  # rootless podman maps the uid
        assert host_uid(engine, container.name) == 65532
    # The root file system is read-only; only the tmpfs takes writes.
    host_config = json.loads(engine.run("inspect", container.name).stdout)[0]["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    write = container.exec("/usr/bin/python3", "-I", "-c", "open('/etc/x', 'w')")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr or "Permission denied" in write.stderr
    # Production defaults: JSON logs, one object per line.
    lines = container.log_lines()
    assert lines
    assert all({"timestamp", "level", "module", "message"} <= set(line) for line in lines)


def test_config_show_inside_shows_no_secret_values(engine: Engine, image: str) -> None:
    database_url = "postgresql+asyncpg://pcf:db-Password-4711@db.example/pcf"
    result = engine.run(
        "run",
        "--rm",
        *HARDENED,
        "-e",
        f"PCF_DATABASE__URL={database_url}",
        "-e",
        f"PCF_AUTH__HS256_SECRET={HS256_SECRET}",
        image,
        "config",
        "show",
        "--format",
        "json",
    )
    assert HS256_SECRET not in result.stdout + result.stderr
    assert "db-Password-4711" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["auth.hs256_secret"] == {
        "value": "<redacted>",
        "source": "env PCF_AUTH__HS256_SECRET",
    }
    assert shown["environment"]["value"] == '"production"'


def test_unsafe_configuration_exits_2_with_one_fatal_json_line(engine: Engine, image: str) -> None:
    result = engine.run("run", "--rm", *HARDENED, image, check=False)
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1
    assert lines[0]["level"] == "FATAL"
    assert "database.url" in lines[0]["message"]


def test_serves_graphql_on_postgresql_over_the_host_network(
    engine: Engine, image: str, start: StartContainer
) -> None:
    port = free_port()
    with postgres_database() as database_url:
        common = (
            "--network",
            "host",
            *HARDENED,
            "-e",
            f"PCF_DATABASE__URL={database_url}",
            "-e",
            f"PCF_AUTH__HS256_SECRET={HS256_SECRET}",
        )
        migrate = engine.run("run", "--rm", *common, image, "migrate", check=False)
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        container = start(image, *common, "-e", f"PCF_SERVER__PORT={port}")
        url = f"http://127.0.0.1:{port}"
        container.wait_until_healthy(f"{url}/health/ready")
        ready = httpx.get(f"{url}/health/ready").json()
        assert ready["services"]["database"]["status"] == "up"
        graphql(url, CREATE)
        assert graphql(url, COUNT) == {"data": {"notes": {"totalCount": 1}}}
        engine.run("stop", "-t", "30", container.name)
        assert container.wait() == 0
