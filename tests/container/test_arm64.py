"""The same Dockerfile for linux/arm64: built natively (cross-assembled), run under qemu."""

from __future__ import annotations

import json

import pytest

from .conftest import HARDENED, HS256_SECRET, Engine, StartContainer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def test_arm64_image_is_arm64_and_imports_everything(engine: Engine, arm64_image: str) -> None:
    inspected = engine.inspect(arm64_image)
    assert inspected["Architecture"] == "arm64"
    probe = (
        "import json, platform, ssl, sqlite3\n"
        "import uvloop, orjson, asyncpg, greenlet, pydantic_core\n"
        "import sqlalchemy.engine._row_cy as row\n"
        "import jwt\n"
        "from jwt.algorithms import RSAAlgorithm\n"
        "from cryptography.hazmat.primitives.asymmetric import ec\n"
        "import pcf_api.app, pcf_api.server\n"
        "key = ec.generate_private_key(ec.SECP256R1())\n"
        "token = jwt.encode({'sub': 'probe'}, key, algorithm='ES256')\n"
        "claims = jwt.decode(token, key.public_key(), algorithms=['ES256'])\n"
        "print(json.dumps({'machine': platform.machine(), 'compiled': row._is_compiled(),\n"
        "  'jwt': claims}))\n"
    )
    result = engine.run(
        "run",
        "--rm",
        "--arch",
        "arm64",
        "--entrypoint",
        "/usr/bin/python3",
        arm64_image,
        "-I",
        "-c",
        probe,
        timeout=300,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "machine": "aarch64",
        "compiled": True,
        "jwt": {"sub": "probe"},
    }


def test_arm64_image_serves_health(engine: Engine, arm64_image: str, start: StartContainer) -> None:
    port = free_port()
    container = start(
        arm64_image,
        "--arch",
        "arm64",
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
    container.wait_until_healthy(f"http://127.0.0.1:{port}/health/ready", timeout=180)
    probe = container.exec("pcf-api", "healthcheck")
    assert probe.returncode == 0, probe.stdout + probe.stderr
