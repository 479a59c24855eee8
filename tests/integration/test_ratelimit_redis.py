"""Budgets kept in Redis are shared: two replicas (two limiters, one Redis) count together."""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic import SecretStr

from pcf_api.config import RateLimitSettings
from pcf_api.ratelimit import Budget, RateLimited, RateLimiter

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("PCF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_two_replicas_share_one_budget_through_redis() -> None:
    settings = RateLimitSettings(search="4/minute", storage_url=SecretStr(REDIS_URL))
    first, second = RateLimiter(settings), RateLimiter(settings)
    client = f"client-{uuid.uuid4().hex}"  # a fresh key: runs do not share a window

    await first.spend(client, {Budget.SEARCH: 2})
    await second.spend(client, {Budget.SEARCH: 2})
    with pytest.raises(RateLimited) as refused:
        await first.spend(client, {Budget.SEARCH: 1})

    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    assert first.rejections == {Budget.SEARCH: 1}
