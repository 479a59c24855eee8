"""What production hides (introspection, GraphiQL, the SDL route) and what it demands: a token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from pcf_api.composition import Service, build_service
from pcf_api.config import load_settings

from .conftest import running

pytestmark = pytest.mark.anyio

INTROSPECTION = "{ __schema { queryType { name } } }"
HS256_SECRET = "prod-profile-test-Secret-0123456789-abcdef"
TOKEN = jwt.encode({"sub": "alice", "exp": time.time() + 3600}, HS256_SECRET, "HS256")
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _service(environ: dict[str, str]) -> Service:
    return build_service(load_settings(environ=environ).settings)


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    environ = {
        "PCF_ENVIRONMENT": "production",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/prod.db",
        "PCF_AUTH__HS256_SECRET": HS256_SECRET,
    }
    async with running(_service(environ)) as client:
        yield client


@pytest.fixture
async def development(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    environ = {
        "PCF_ENVIRONMENT": "development",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/dev.db",
    }
    async with running(_service(environ)) as client:
        yield client


async def test_production_rejects_introspection(production: httpx.AsyncClient) -> None:
    response = await production.post(
        "/graphql",
        json={"query": INTROSPECTION},
        headers={"Accept": "application/graphql-response+json", **BEARER},
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert "introspection" in error["message"].lower()


async def test_production_has_no_graphiql_and_no_schema_route(
    production: httpx.AsyncClient,
) -> None:
    page = await production.get("/graphql", headers={"Accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    assert page.status_code == 400
    assert (await production.get("/schema")).status_code == 404


async def test_production_still_answers_ordinary_queries(production: httpx.AsyncClient) -> None:
    response = await production.post(
        "/graphql", json={"query": "{ notes { totalCount } }"}, headers=BEARER
    )
    assert response.json() == {"data": {"notes": {"totalCount": 0}}}


@pytest.mark.parametrize("query", ["{ notes { totalCount } }", INTROSPECTION, "{ nope }"])
async def test_production_answers_nothing_without_a_token(
    production: httpx.AsyncClient, query: str
) -> None:
    response = await production.post(
        "/graphql", json={"query": query}, headers={"X-Demo-User": "alice"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHORIZED"
    assert "data" not in response.json()


async def test_development_offers_introspection_graphiql_and_the_sdl(
    development: httpx.AsyncClient,
) -> None:
    response = await development.post("/graphql", json={"query": INTROSPECTION})
    assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"
    page = await development.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    sdl = (await development.get("/schema")).text
    assert "type Query" in sdl
    assert "noteCreated: Note!" in sdl
