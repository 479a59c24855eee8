"""An in-process pcf-api (real app, real database) and a GraphQL-over-HTTP client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from pcf_api.composition import Service, build_service
from pcf_api.config import load_settings

GRAPHQL_RESPONSE = "application/graphql-response+json"


class GraphQLClient:
    """Speaks GraphQL over HTTP to the app; returns the httpx response for full inspection.

    Requests are made as ``user`` (the development demo identity's ``X-Demo-User``) unless a
    call names another ``user`` or passes ``headers`` of its own (e.g. a bearer token)."""

    def __init__(self, http: httpx.AsyncClient, user: str | None = "alice") -> None:
        self.http = http
        self.user = user

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        accept: str = GRAPHQL_RESPONSE,
        user: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        payload: dict[str, Any] = {"query": query, **extra}
        if variables is not None:
            payload["variables"] = variables
        sent = {"Accept": accept}
        if headers is not None:
            sent.update(headers)
        elif (user or self.user) is not None:
            sent["X-Demo-User"] = user or self.user or ""
        return await self.http.post("/graphql", json=payload, headers=sent)

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, user: str | None = None
    ) -> Any:
        response = await self.post(query, variables, user=user)
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        return body["data"]

    async def create(self, title: str = "t", content: str = "c", author: str = "alice") -> Any:
        """A note by ``author``, created as ``author`` (notes are created by their author)."""
        data = await self.data(
            "mutation($i: CreateNoteInput!) { createNote(input: $i) { id title content author } }",
            {"i": {"title": title, "content": content, "author": author}},
            user=author,
        )
        return data["createNote"]


def settings_for(database_url: str, **env: str) -> Any:
    environ = {
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__FORMAT": "json",
        "PCF_DATABASE__URL": database_url,
        **env,
    }
    return load_settings(environ=environ).settings


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The service's app through its lifespan, once the notes API is ready, with an HTTP client
    to it."""
    app = service.app
    async with app.router.lifespan_context(app):
        for _ in range(200):
            if service.ready:
                break
            await asyncio.sleep(0.05)
        assert service.ready, "notes API did not become ready"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
def service(database_url: str) -> Service:
    return build_service(settings_for(database_url))


@pytest.fixture
async def client(service: Service) -> AsyncIterator[GraphQLClient]:
    async with running(service) as http:
        yield GraphQLClient(http)
