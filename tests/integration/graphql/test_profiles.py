"""What production hides: introspection, GraphiQL and the SDL route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from pcf_api.app import create_app
from pcf_api.config import load_settings

from .conftest import running

pytestmark = pytest.mark.anyio

INTROSPECTION = "{ __schema { queryType { name } } }"


def _app(environ: dict[str, str]) -> Starlette:
    return create_app(load_settings(environ=environ).settings)


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    environ = {
        "PCF_ENVIRONMENT": "production",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/prod.db",
    }
    async with running(_app(environ)) as client:
        yield client


@pytest.fixture
async def development(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    environ = {
        "PCF_ENVIRONMENT": "development",
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/dev.db",
    }
    async with running(_app(environ)) as client:
        yield client


async def test_production_rejects_introspection(production) -> None:
    response = await production.post(
        "/graphql",
        json={"query": INTROSPECTION},
        headers={"Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert "introspection" in error["message"].lower()


async def test_production_has_no_graphiql_and_no_schema_route(production) -> None:
    page = await production.get("/graphql", headers={"Accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    assert page.status_code == 400
    assert (await production.get("/schema")).status_code == 404


async def test_production_still_answers_ordinary_queries(production) -> None:
    response = await production.post("/graphql", json={"query": "{ notes { totalCount } }"})
    assert response.json() == {"data": {"notes": {"totalCount": 0}}}


async def test_development_offers_introspection_graphiql_and_the_sdl(development) -> None:
    response = await development.post("/graphql", json={"query": INTROSPECTION})
    assert response.json()["data"]["__schema"]["queryType"]["name"] == "Query"
    page = await development.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    sdl = (await development.get("/schema")).text
    assert "type Query" in sdl
    assert "noteCreated: Note!" in sdl
