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
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter as SyncMovingWindow

from pcf_api.config import RateLimitSettings
from pcf_api.errors import AppError, ErrorCode

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

STORAGE_WARNING_INTERVAL = 30.0


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
    """One moving window per (budget, client): exact counts, no burst at window edges."""

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
        url = settings.storage_url.get_secret_value() if settings.storage_url else "memory://"
        self.strategy: MovingWindowRateLimiter | _InProcessWindow
        if url.startswith("memory"):
            self.strategy = _InProcessWindow()
        else:
            # redis-py, which the events broker uses already (the default async client is
            # coredis, not installed).
            storage = storage_from_string(f"async+{url}", implementation="redispy")
            self.strategy = MovingWindowRateLimiter(storage)
        self._last_warning = -STORAGE_WARNING_INTERVAL

    async def spend(self, client: str, costs: Mapping[Budget, int]) -> None:
        """Take ``cost`` units from each budget; raises RateLimited at the first that has not
        enough left (what earlier budgets gave stays spent: the request was made)."""
        if not self.enabled:
            return
        for budget, cost in costs.items():
            if cost <= 0:
                continue
            for limit in self.limits[budget]:  # e.g. "1000/hour;50/minute": each must allow it
                if not await self._hit(limit, budget, client, cost):
                    stats = await self.strategy.get_window_stats(limit, budget.value, client)
                    retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                    self.rejections[budget] += 1
                    raise RateLimited(budget, limit, retry_after)

    async def _hit(self, limit: RateLimitItem, budget: Budget, client: str, cost: int) -> bool:
        """Spend from the storage. If the storage (Redis) cannot be reached the request is let
        through: a limiter outage must not become an outage of the API. Warned every 30 s."""
        try:
            return await self.strategy.hit(limit, budget.value, client, cost=cost)
        except Exception as exc:  # noqa: BLE001 - any storage failure: fail open, loudly
            now = time.monotonic()
            if now - self._last_warning >= STORAGE_WARNING_INTERVAL:
                self._last_warning = now
                log.warning(
                    "rate-limit storage unreachable; not limiting", reason=type(exc).__name__
                )
            return True


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
