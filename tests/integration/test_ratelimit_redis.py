"""Budgets kept in Redis are shared: two replicas (two limiters, one Redis) count together.

When that Redis refuses, hangs or goes away mid-run, every budget is still enforced, counted
in process; no request waits longer than the storage timeout for it, and once the breaker is
open none waits at all. Readiness names it (``rate_limit_redis``) while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from pcf_api.config import RateLimitSettings
from pcf_api.ratelimit import BREAKER_FAILURES, Budget, RateLimited, RateLimiter
from support.logs import LogCapture, capture_logs
from support.redis import PrivateRedis, private_redis, refusing_url, silent_listener

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("PCF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT = 0.2


def limiter(url: str, **settings: str) -> RateLimiter:
    return RateLimiter(
        RateLimitSettings(storage_url=SecretStr(url), storage_timeout_seconds=TIMEOUT, **settings)
    )


async def spend_until_refused(limiter: RateLimiter, client: str, attempts: int) -> int:
    """How many mutations of ``attempts`` were let through."""
    passed = 0
    for _ in range(attempts):
        try:
            await limiter.spend(client, {Budget.MUTATION: 1})
        except RateLimited:
            continue
        passed += 1
    return passed


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with capture_logs() as capture:
        yield capture


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as server:
        yield server


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
    await first.check()


async def test_a_refusing_redis_leaves_the_budgets_counted_in_process(logs: LogCapture) -> None:
    refusing = limiter(refusing_url(), mutations="100/minute")

    assert await spend_until_refused(refusing, "alice", 150) == 100
    assert refusing.rejections == {Budget.MUTATION: 50}
    assert refusing.fallback_active
    assert refusing.fallback_decisions == 150
    [line] = logs.find("rate-limit storage unavailable; limiting per process")
    assert (line["level"], line["dependency"], line["reason"]) == (
        "WARN",
        "rate_limit_redis",
        "ConnectionError",
    )
    with pytest.raises(ConnectionError):
        await refusing.check()


async def test_a_hanging_redis_costs_a_request_at_most_the_timeout_then_nothing() -> None:
    with silent_listener() as url:
        hanging = limiter(url, mutations="20/minute")
        waits = []
        for _ in range(30):
            began = time.monotonic()
            with contextlib.suppress(RateLimited):
                await hanging.spend("alice", {Budget.MUTATION: 1})
            waits.append(time.monotonic() - began)
        with pytest.raises(ConnectionError):
            await hanging.check()

    assert hanging.rejections == {Budget.MUTATION: 10}
    # Until the breaker opens each request waits for the timeout, no longer; after it, none.
    assert max(waits[:BREAKER_FAILURES]) < TIMEOUT + 0.3
    assert max(waits[BREAKER_FAILURES:]) < 0.05


async def test_a_redis_stopped_mid_run_falls_back_then_shares_again(
    redis_server: PrivateRedis, logs: LogCapture
) -> None:
    first, second = (limiter(redis_server.url, mutations="10/minute") for _ in range(2))
    first.breaker.reset_timeout = second.breaker.reset_timeout = 0.2

    assert await spend_until_refused(first, "alice", 4) == 4
    redis_server.stop()
    # Counted in process from here: the four spent in Redis are not seen.
    assert await spend_until_refused(first, "alice", 12) == 10
    assert first.fallback_active
    with pytest.raises(ConnectionError):
        await first.check()

    redis_server.start()
    await asyncio.sleep(0.25)  # the breaker lets a probe through
    await first.spend("bob", {Budget.MUTATION: 1})
    assert not first.fallback_active
    await first.check()
    assert logs.find("rate-limit storage available again; limits are shared")
    # Shared again: what one replica spends, the other sees.
    assert await spend_until_refused(first, "carol", 6) == 6
    assert await spend_until_refused(second, "carol", 6) == 4
