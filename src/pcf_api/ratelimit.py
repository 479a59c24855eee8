"""Per-client request budgets, with the ``limits`` library: in process, or shared in Redis.

A client is its authenticated subject, else its IP address. Each operation spends from the
budget of its kind (query, mutation, subscription); a document that calls ``searchNotes`` also
spends from the search budget, which is much smaller because a search scans. Past a budget the
request is refused with 429 RATE_LIMITED and ``Retry-After`` (seconds until a unit is free).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

import structlog
from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter as SyncMovingWindow
from redis.exceptions import RedisError

from pcf_api.config import RateLimitSettings
from pcf_api.errors import AppError, ErrorCode
from pcf_api.resilience import CircuitBreaker, CircuitOpenError

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

BREAKER_FAILURES = 3
"""Consecutive storage failures that open the breaker: from then on every decision is made in
process at once, instead of each request waiting for the storage's timeout."""
BREAKER_RESET_SECONDS = 5.0
"""How long the breaker stays open before one request tries the storage again."""

_OUTAGES = (RedisError, OSError, TimeoutError, CircuitOpenError)


class Budget(StrEnum):
    QUERY = "query"
    MUTATION = "mutation"
    SUBSCRIPTION = "subscription"
    SEARCH = "search"


class RateLimited(AppError):
    def __init__(self, budget: Budget, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(
            ErrorCode.RATE_LIMITED,
            f"Too many {budget.value} requests: at most {limit}.",
            extensions={"budget": budget.value, "limit": str(limit), "retryAfter": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class RateLimiter:
    """One moving window per (budget, client): exact counts, no burst at window edges.

    With a shared storage (Redis) every call to it is bounded by ``storage_timeout_seconds``
    and guarded by a circuit breaker. While the storage fails, each process counts the same
    budgets on its own (``fallback_active``; a client may then get up to N times its budget
    over N replicas), never none; the switch is logged both ways."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.enabled = settings.enabled
        self.limits = {
            Budget.QUERY: parse_many(settings.queries),
            Budget.MUTATION: parse_many(settings.mutations),
            Budget.SUBSCRIPTION: parse_many(settings.subscriptions),
            Budget.SEARCH: parse_many(settings.search),
        }
        self.rejections: Counter[Budget] = Counter()
        """Requests refused, per budget (for the metrics)."""
        self.fallback_active = False
        """The shared storage is failing: budgets are counted in this process."""
        self.fallback_decisions = 0
        """Budget decisions made in process because the shared storage failed (metrics)."""
        self.local = _InProcessWindow()
        self.storage: AsyncStorage | None = None
        self.shared: MovingWindowRateLimiter | None = None
        self.breaker = CircuitBreaker(
            "rate_limit_redis",
            failure_threshold=BREAKER_FAILURES,
            reset_timeout=BREAKER_RESET_SECONDS,
        )
        url = settings.storage_url.get_secret_value() if settings.storage_url else "memory://"
        if not url.startswith("memory"):
            # redis-py, which the events broker uses already (the default async client is
            # coredis, not installed).
            timeout = settings.storage_timeout_seconds
            storage = storage_from_string(
                f"async+{url}",
                implementation="redispy",
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            if not isinstance(storage, AsyncStorage):
                raise TypeError(f"not an async rate-limit storage: {type(storage).__name__}")
            self.storage = storage
            self.shared = MovingWindowRateLimiter(storage)

    async def spend(self, client: str, costs: Mapping[Budget, int]) -> None:
        """Take ``cost`` units from each budget; raises RateLimited at the first that has not
        enough left (what earlier budgets gave stays spent: the request was made)."""
        if not self.enabled:
            return
        for budget, cost in costs.items():
            if cost <= 0:
                continue
            for limit in self.limits[budget]:  # e.g. "1000/hour;50/minute": each must allow it
                allowed, reset_time = await self._hit(limit, budget, client, cost)
                if not allowed:
                    retry_after = max(1, math.ceil(reset_time - time.time()))
                    self.rejections[budget] += 1
                    raise RateLimited(budget, limit, retry_after)

    async def check(self) -> None:
        """Health: the shared storage answers a PING (within its timeout)."""
        if self.storage is not None and not await self.storage.check():
            raise ConnectionError("the rate-limit storage did not answer PING")

    async def _hit(
        self, limit: RateLimitItem, budget: Budget, client: str, cost: int
    ) -> tuple[bool, float]:
        """Whether the budget allows ``cost``, and when its window next frees a unit (only
        asked when refused)."""
        shared = self.shared
        if shared is not None:
            try:
                allowed = await self.breaker.call(
                    lambda: shared.hit(limit, budget.value, client, cost=cost)
                )
            except _OUTAGES as error:
                self._fall_back(error)
            else:
                self._shared_again()
                if allowed:
                    return True, 0.0
                try:
                    stats = await self.breaker.call(
                        lambda: shared.get_window_stats(limit, budget.value, client)
                    )
                except _OUTAGES:
                    return False, 0.0  # refused all the same; Retry-After is then 1
                return False, stats.reset_time
        allowed = await self.local.hit(limit, budget.value, client, cost=cost)
        reset_time = 0.0
        if not allowed:
            reset_time = (await self.local.get_window_stats(limit, budget.value, client)).reset_time
        return allowed, reset_time

    def _fall_back(self, error: BaseException) -> None:
        self.fallback_decisions += 1
        if not self.fallback_active:
            self.fallback_active = True
            log.warning(
                "rate-limit storage unavailable; limiting per process",
                dependency="rate_limit_redis",
                reason=type(error).__name__,
            )

    def _shared_again(self) -> None:
        if self.fallback_active:
            self.fallback_active = False
            log.info(
                "rate-limit storage available again; limits are shared",
                dependency="rate_limit_redis",
            )


class _InProcessWindow:
    """The synchronous in-process moving window behind the async strategy's interface: a dict
    behind a lock, nothing to await, and no background tasks on the event loop (the async
    memory storage runs its expiry as event-loop tasks that hop to threads; this one expires
    on a timer thread)."""

    def __init__(self) -> None:
        self._limiter = SyncMovingWindow(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self._limiter.hit(item, *identifiers, cost=cost)

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self._limiter.get_window_stats(item, *identifiers)
