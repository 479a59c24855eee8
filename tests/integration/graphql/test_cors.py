"""CORS for browser apps on other origins (spec: app.py ``cors_middleware``, issue 18).

Each test builds the real application with ``build_service`` from environment settings, as
``pcf-api serve`` does, and drives it in-process through its lifespan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.middleware.cors import CORSMiddleware

from pcf_api.composition import build_service
from pcf_api.config import load_settings
from pcf_api.config.loader import ConfigError
from pcf_api.middleware import ErrorBoundaryMiddleware, RequestContextMiddleware

from .conftest import running

pytestmark = pytest.mark.anyio

APP = "https://app.example.com"
ADMIN = "https://admin.example.com"
EVIL = "https://evil.example.net"
SECRET = "cors-test-Secret-0123456789-abcdefghij"
QUERY = {"query": "{ notes { totalCount } }"}


def bearer(subject: str = "alice") -> dict[str, str]:
    token = jwt.encode({"sub": subject, "exp": time.time() + 3600}, SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


def production_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "PCF_ENVIRONMENT": "production",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/cors.db",
        "PCF_AUTH__HS256_SECRET": SECRET,
        "PCF_LOG__FORMAT": "json",
        **env,
    }


@asynccontextmanager
async def serving(environ: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build_service(load_settings(environ=environ).settings)) as http:
        yield http


def preflight_headers(origin: str, headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


def listed(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Production allowing two exact origins, with a budget of two queries a minute."""
    environ = production_env(
        tmp_path,
        PCF_CORS__ALLOW_ORIGINS=f"{APP}, {ADMIN}",
        PCF_CORS__MAX_AGE="1234",
        PCF_RATE_LIMIT__QUERIES="2/minute",
    )
    async with serving(environ) as http:
        yield http


async def test_a_preflight_from_an_allowed_origin_needs_no_identity_and_spends_no_budget(
    production: httpx.AsyncClient,
) -> None:
    asked = "authorization, content-type, traceparent, tracestate"
    for _ in range(10):  # five times the query budget
        answer = await production.options("/graphql", headers=preflight_headers(APP, asked))
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == APP
        assert {"get", "post"} <= listed(answer.headers["access-control-allow-methods"])
        allowed = listed(answer.headers["access-control-allow-headers"])
        assert {"authorization", "content-type", "traceparent", "tracestate"} <= allowed
        assert answer.headers["access-control-max-age"] == "1234"
        assert "origin" in listed(answer.headers["vary"])
        assert "access-control-allow-credentials" not in answer.headers
        assert answer.headers["x-trace-id"]  # still inside the request context

    # The whole budget is still there: two queries pass, the third is refused.
    for _ in range(2):
        served = await production.post("/graphql", json=QUERY, headers={**bearer(), "Origin": APP})
        assert served.status_code == 200, served.text
    refused = await production.post("/graphql", json=QUERY, headers={**bearer(), "Origin": APP})
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == APP
    assert "retry-after" in listed(refused.headers["access-control-expose-headers"])
    assert refused.headers["retry-after"]


async def test_the_second_listed_origin_is_allowed_too(production: httpx.AsyncClient) -> None:
    answer = await production.options("/graphql", headers=preflight_headers(ADMIN))
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ADMIN


@pytest.mark.parametrize(
    "origin",
    [EVIL, "http://app.example.com", "https://app.example.com.evil.net", "null"],
)
async def test_a_preflight_from_another_origin_gets_no_allow_origin(
    production: httpx.AsyncClient, origin: str
) -> None:
    answer = await production.options("/graphql", headers=preflight_headers(origin))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    # And the request itself, if a non-browser sends it anyway, is not marked as shareable.
    served = await production.post("/graphql", json=QUERY, headers={**bearer(), "Origin": origin})
    assert served.status_code == 200
    assert "access-control-allow-origin" not in served.headers


async def test_a_preflight_asking_for_an_unlisted_header_is_refused(
    production: httpx.AsyncClient,
) -> None:
    answer = await production.options("/graphql", headers=preflight_headers(APP, "x-sneaky"))
    assert answer.status_code == 400


async def test_a_real_post_exposes_the_headers_a_client_reads(
    production: httpx.AsyncClient,
) -> None:
    answer = await production.post("/graphql", json=QUERY, headers={**bearer(), "Origin": APP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    exposed = listed(answer.headers["access-control-expose-headers"])
    assert {"x-trace-id", "x-query-complexity", "retry-after"} <= exposed
    assert answer.headers["x-trace-id"]
    assert answer.headers["x-query-complexity"]
    assert "origin" in listed(answer.headers["vary"])


async def test_error_responses_carry_the_cors_headers(production: httpx.AsyncClient) -> None:
    # 401 from the GraphQL handler: no token.
    unauthenticated = await production.post("/graphql", json=QUERY, headers={"Origin": APP})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["access-control-allow-origin"] == APP
    # 413 from the body limit, answered by the error boundary.
    big = {"query": "{ notes { totalCount } }" + " " * (2 * 1024 * 1024)}
    too_large = await production.post("/graphql", json=big, headers={**bearer(), "Origin": APP})
    assert too_large.status_code == 413
    assert too_large.headers["access-control-allow-origin"] == APP
    assert too_large.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # 404 from the router.
    missing = await production.get("/nowhere", headers={"Origin": APP})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == APP


async def test_credentials_are_allowed_only_when_configured(tmp_path: Path) -> None:
    environ = production_env(
        tmp_path, PCF_CORS__ALLOW_ORIGINS=APP, PCF_CORS__ALLOW_CREDENTIALS="true"
    )
    async with serving(environ) as http:
        answer = await http.options("/graphql", headers=preflight_headers(APP))
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-allow-origin"] == APP
        served = await http.post("/graphql", json=QUERY, headers={**bearer(), "Origin": APP})
        assert served.headers["access-control-allow-credentials"] == "true"


async def test_production_allows_no_origin_by_default(tmp_path: Path) -> None:
    settings = load_settings(environ=production_env(tmp_path)).settings
    assert settings.cors.allow_origins == []
    assert settings.cors.allow_origin_regex is None
    service = build_service(settings)
    # No origin allowed: the middleware is not even installed (nothing to pay per request).
    # (starlette types ``Middleware.cls`` as a factory protocol: compare as plain objects)
    classes: list[object] = [middleware.cls for middleware in service.app.user_middleware]
    assert CORSMiddleware not in classes
    async with running(service) as http:
        answer = await http.options("/graphql", headers=preflight_headers("http://localhost:3000"))
        assert "access-control-allow-origin" not in answer.headers
        served = await http.post(
            "/graphql", json=QUERY, headers={**bearer(), "Origin": "http://localhost:3000"}
        )
        assert served.status_code == 200
        assert not any(name.startswith("access-control-") for name in served.headers)


def test_cors_sits_inside_the_request_context_and_outside_the_error_boundary(
    tmp_path: Path,
) -> None:
    settings = load_settings(environ=production_env(tmp_path, PCF_CORS__ALLOW_ORIGINS=APP)).settings
    classes: list[object] = [m.cls for m in build_service(settings).app.user_middleware]
    assert classes[:3] == [RequestContextMiddleware, CORSMiddleware, ErrorBoundaryMiddleware]


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:5173"])
async def test_development_allows_local_web_apps_on_any_port(tmp_path: Path, origin: str) -> None:
    environ = {
        "PCF_ENVIRONMENT": "development",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/dev.db",
        "PCF_LOG__FORMAT": "json",
    }
    async with serving(environ) as http:
        asked = "content-type, x-demo-user"
        answer = await http.options("/graphql", headers=preflight_headers(origin, asked))
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == origin
        served = await http.post(
            "/graphql", json=QUERY, headers={"Origin": origin, "X-Demo-User": "alice"}
        )
        assert served.status_code == 200
        assert served.headers["access-control-allow-origin"] == origin
        for other in ("http://localhost.evil.net:3000", "https://localhost:3000", EVIL):
            refused = await http.options("/graphql", headers=preflight_headers(other))
            assert "access-control-allow-origin" not in refused.headers, other


@pytest.mark.parametrize(
    "cors",
    [
        {"PCF_CORS__ALLOW_ORIGINS": "*"},
        {"PCF_CORS__ALLOW_ORIGINS": f"{APP},*"},
        {"PCF_CORS__ALLOW_ORIGIN_REGEX": ".*"},
    ],
)
def test_any_origin_with_credentials_is_refused_by_load_settings(
    tmp_path: Path, cors: dict[str, str]
) -> None:
    environ = production_env(tmp_path, PCF_CORS__ALLOW_CREDENTIALS="true", **cors)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert any(problem.startswith("cors.") for problem in caught.value.problems)


def test_any_origin_without_credentials_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(environ=production_env(tmp_path, PCF_CORS__ALLOW_ORIGINS="*")).settings
    assert settings.cors.allow_origins == ["*"]


def test_serve_with_any_origin_and_credentials_exits_2_with_one_fatal_line(tmp_path: Path) -> None:
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith("PCF_")
    } | production_env(tmp_path, PCF_CORS__ALLOW_ORIGINS="*", PCF_CORS__ALLOW_CREDENTIALS="true")
    cli = Path(sys.executable).with_name("pcf-api")
    done = subprocess.run(
        [str(cli), "serve"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    record = json.loads(lines[0])
    assert record["level"] == "FATAL"
    assert "cors.allow_origins" in record["message"]
