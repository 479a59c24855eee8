"""Per-client budgets: exact counts per window, every rate of a multi-rate budget enforced."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from pcf_api.config import RateLimitSettings
from pcf_api.ratelimit import Budget, RateLimited, RateLimiter
from support.logs import capture_logs

pytestmark = pytest.mark.anyio


async def test_a_budget_allows_exactly_its_amount_per_client() -> None:
    limiter = RateLimiter(RateLimitSettings(search="3/minute"))
    for _ in range(3):
        await limiter.spend("alice", {Budget.SEARCH: 1})
    with pytest.raises(RateLimited) as refused:
        await limiter.spend("alice", {Budget.SEARCH: 1})
    await limiter.spend("bob", {Budget.SEARCH: 1})  # another client, another budget
    await limiter.spend("alice", {Budget.QUERY: 1})  # another kind, another budget
    assert refused.value.code.value == "RATE_LIMITED"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    assert refused.value.extensions["budget"] == "search"
    assert limiter.rejections == {Budget.SEARCH: 1}


async def test_a_cost_spends_several_units_at_once() -> None:
    limiter = RateLimiter(RateLimitSettings(search="5/minute"))
    await limiter.spend("alice", {Budget.SEARCH: 4})
    with pytest.raises(RateLimited):
        await limiter.spend("alice", {Budget.SEARCH: 2})


async def test_every_rate_of_a_multi_rate_budget_applies() -> None:
    limiter = RateLimiter(RateLimitSettings(mutations="100/hour;2/minute"))
    await limiter.spend("alice", {Budget.MUTATION: 1})
    await limiter.spend("alice", {Budget.MUTATION: 1})
    with pytest.raises(RateLimited) as refused:
        await limiter.spend("alice", {Budget.MUTATION: 1})
    assert "2 per 1 minute" in refused.value.message


async def test_a_disabled_limiter_refuses_nothing() -> None:
    limiter = RateLimiter(RateLimitSettings(enabled=False, search="1/minute"))
    for _ in range(5):
        await limiter.spend("alice", {Budget.SEARCH: 1})
    assert limiter.rejections == {}


async def test_an_unreachable_storage_still_limits_in_process_and_says_so() -> None:
    limiter = RateLimiter(
        RateLimitSettings(search="1/minute", storage_url=SecretStr("redis://127.0.0.1:1/0"))
    )
    with capture_logs() as logs:
        await limiter.spend("alice", {Budget.SEARCH: 1})
        for _ in range(2):
            with pytest.raises(RateLimited):
                await limiter.spend("alice", {Budget.SEARCH: 1})
    (warning,) = logs.find("rate-limit storage unavailable; limiting per process")
    assert warning["level"] == "WARN"
    assert limiter.rejections == {Budget.SEARCH: 2}
