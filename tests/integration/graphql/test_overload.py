"""Overload is not an outage: with every pooled connection busy, a request that cannot get one
within ``database.pool_timeout_seconds`` is answered SERVICE_UNAVAILABLE (retry shortly), the
database is not marked down (no cache fallback, writes do not queue), and readiness stays
healthy — under load, every replica taking itself out of service would only move the load."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from sqlalchemy.pool import QueuePool

from pcf_api.composition import build_service
from pcf_api.health import Status

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

NOTES = "{ notes(limit: 5) { totalCount } }"


async def test_a_busy_pool_answers_service_unavailable_and_stays_ready(database_url: str) -> None:
    settings = settings_for(
        database_url,
        PCF_DATABASE__POOL_SIZE="2",
        PCF_DATABASE__POOL_TIMEOUT_SECONDS="0.3",
        PCF_HEALTH__CHECK_TIMEOUT_SECONDS="1",
    )
    service = build_service(settings)
    assert service.notes is not None
    async with running(service) as http:
        client = GraphQLClient(http)
        await client.create()
        store = service.notes.services.store
        database = store.database
        pool = database.pool
        assert isinstance(pool, QueuePool)  # both the sqlite and the asyncpg pool have a size
        async with AsyncExitStack() as held:
            for _ in range(pool.size()):
                if database.dialect_name == "sqlite":  # its serving pool is synchronous
                    held.callback(database.pool.connect().close)
                else:
                    await held.enter_async_context(database.engine.connect())

            body = (await client.post(NOTES)).json()
            (error,) = body["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert store.availability.is_up  # not taken for an outage

            began = asyncio.get_running_loop().time()
            await service.health.check_all()
            assert asyncio.get_running_loop().time() - began < 0.5  # no ping queued behind
            assert service.health.status() is Status.HEALTHY

        data = await client.data(NOTES)
        assert data["notes"]["totalCount"] == 1
