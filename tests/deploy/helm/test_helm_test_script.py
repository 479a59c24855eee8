"""files/helm-test.py, the `helm test` check, against a real pcf-api in production mode: it passes
on a ready server (with a token minted from the HS256 secret file, and without a secret through
the 401 challenge), and fails when the server is not there."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.helm import CHART
from support.servers import ServerProcess, clean_environ, free_port, start_server

pytestmark = pytest.mark.integration
SCRIPT = CHART / "files" / "helm-test.py"
SECRET = "helm-test-secret-" + "s" * 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    directory = tmp_path_factory.mktemp("helm-test")
    secret_file = directory / "hs256-secret"
    secret_file.write_text(SECRET + "\n")
    process = start_server(
        directory,
        {
            "PCF_ENVIRONMENT": "production",
            "PCF_SERVER__HOST": "127.0.0.1",
            "PCF_SERVER__DRAIN_SECONDS": "0",
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{directory / 'notes.db'}",
            "PCF_AUTH__HS256_SECRET_FILE": str(secret_file),
            "PCF_AUTH__ISSUER": "https://issuer.example",
            "PCF_AUTH__AUDIENCE": "pcf-api",
            "PCF_AUTH__JWKS_URL": "http://127.0.0.1:9/jwks.json",
        },
    )
    try:
        process.wait_until_ready(timeout=30)
        yield process, secret_file
    finally:
        process.terminate()
        process.wait(timeout=30)


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT)],
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_passes_with_a_token_minted_from_the_secret_file(
    server: tuple[ServerProcess, Path],
) -> None:
    process, secret_file = server
    result = check(
        {
            "PCF_TEST_URL": process.url,
            "PCF_AUTH__HS256_SECRET_FILE": str(secret_file),
            "PCF_AUTH__ISSUER": "https://issuer.example",
            "PCF_AUTH__AUDIENCE": "pcf-api",
        }
    )
    assert result.returncode == 0, result.stderr
    assert (
        "ok: /health/ready healthy" in result.stdout
        or "ok: /health/ready degraded" in result.stdout
    )
    assert '{"notes": {"totalCount": 0}}' in result.stdout


def test_without_a_secret_it_checks_the_bearer_challenge(
    server: tuple[ServerProcess, Path],
) -> None:
    process, _ = server
    result = check({"PCF_TEST_URL": process.url})
    assert result.returncode == 0, result.stderr
    assert "401 with a Bearer challenge" in result.stdout


def test_a_wrong_secret_fails(server: tuple[ServerProcess, Path], tmp_path: Path) -> None:
    process, _ = server
    wrong = tmp_path / "wrong"
    wrong.write_text("w" * 48)
    result = check(
        {
            "PCF_TEST_URL": process.url,
            "PCF_AUTH__HS256_SECRET_FILE": str(wrong),
            "PCF_AUTH__ISSUER": "https://issuer.example",
            "PCF_AUTH__AUDIENCE": "pcf-api",
        }
    )
    assert result.returncode == 1
    assert "FAIL: GraphQL query answered 401" in result.stderr


def test_fails_when_nothing_answers() -> None:
    result = check({"PCF_TEST_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "FAIL: cannot reach" in result.stderr
