"""Staying correct while a dependency is away: an availability tracker, a bounded write wait
and a circuit breaker.

The tracker is the single place that knows whether the database is up and since when it is
down; health checks and failed or successful operations both feed it. Writes that find the
database down wait for it to come back — bounded in number and in time — instead of failing at
once, and are acknowledged only after they commit. The breaker stops calls to a remote service
that keeps failing, so callers fail (or fall back) at once instead of each waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from pcf_api.errors import AppError, ErrorCode
from pcf_api.observability.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class Availability:
    """Whether a dependency is up; when down, since when (monotonic seconds)."""

    def __init__(
        self,
        name: str,
        *,
        on_down: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.on_down = on_down
        self._clock = clock
        self._down_since: float | None = None
        self._up = asyncio.Event()
        self._up.set()

    @property
    def is_up(self) -> bool:
        return self._down_since is None

    def down_for(self) -> float:
        """Seconds since it went down; 0 while up."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def mark_down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            self._up.clear()
            log.warning("dependency unavailable", service=self.name, reason=reason)
            if self.on_down is not None:
                self.on_down()

    def mark_up(self) -> None:
        if self._down_since is not None:
            down_seconds = round(self.down_for(), 3)
            log.info("dependency available again", service=self.name, down_seconds=down_seconds)
            self._down_since = None
            self._up.set()

    async def wait_up(self) -> None:
        await self._up.wait()


class WriteGate:
    """Holds writes while the database is down: at most ``capacity`` at once, each at most
    ``max_wait`` seconds. A write that cannot be placed or waits too long is refused with
    SERVICE_UNAVAILABLE — never silently dropped, never acknowledged before it commits."""

    def __init__(
        self,
        availability: Availability,
        *,
        capacity: int,
        max_wait: float,
        is_unavailable: Callable[[BaseException], bool],
    ) -> None:
        self.availability = availability
        self.capacity = capacity
        self.max_wait = max_wait
        self.is_unavailable = is_unavailable
        self.waiting = 0

    async def run(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run ``write``; while the database is unavailable, wait for it and try again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        queued = False
        try:
            while True:
                if self.availability.is_up:
                    try:
                        return await write()
                    except Exception as exc:
                        if not self.is_unavailable(exc):
                            raise
                        self.availability.mark_down(type(exc).__name__)
                if not queued:
                    if self.waiting >= self.capacity:
                        raise AppError(
                            ErrorCode.SERVICE_UNAVAILABLE,
                            "The database is unavailable and the write queue is full.",
                            headers={"Retry-After": "5"},
                        )
                    self.waiting += 1
                    queued = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _gave_up()
                try:
                    async with asyncio.timeout(remaining):
                        await self.availability.wait_up()
                except TimeoutError:
                    raise _gave_up() from None
        finally:
            if queued:
                self.waiting -= 1


def _gave_up() -> AppError:
    return AppError(
        ErrorCode.SERVICE_UNAVAILABLE,
        "The database did not come back in time; the write was not applied.",
        headers={"Retry-After": "5"},
    )


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Exception):
    """Refused without calling: the breaker is open (or its one half-open probe is in flight)."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open")


class CircuitBreaker:
    """Closed: calls pass; ``failure_threshold`` consecutive failures open it. Open: calls are
    refused at once for ``reset_timeout`` seconds. Then half-open: one probe call passes; its
    success closes the breaker, its failure opens it again for another ``reset_timeout``.

    ``is_failure`` tells which exceptions mean "the service is not working" (timeouts, refused
    connections, 5xx); any other exception proves the service answered and counts as a success.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout: float,
        is_failure: Callable[[BaseException], bool] = lambda _: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.is_failure = is_failure
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` unless the breaker refuses it (CircuitOpenError)."""
        probe = self._admit()
        try:
            result = await operation()
        except Exception as exc:
            if self.is_failure(exc):
                self._record_failure(type(exc).__name__, probe=probe)
            else:
                self._record_success()
            raise
        finally:
            if probe:
                self._probing = False
        self._record_success()
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open probe; raises when the call may not pass."""
        opened_at = self._opened_at
        if opened_at is None:
            return False
        now = self._clock()
        if not self._probing and now - opened_at >= self.reset_timeout:
            self._probing = True
            return True
        raise CircuitOpenError(self.name, max(0.0, opened_at + self.reset_timeout - now))

    def _record_success(self) -> None:
        if self._opened_at is not None:
            log.info("circuit closed", circuit=self.name)
        self._failures = 0
        self._opened_at = None

    def _record_failure(self, reason: str, *, probe: bool) -> None:
        self._failures += 1
        if probe:
            self._opened_at = self._clock()  # open again for another period
            log.warning("circuit probe failed", circuit=self.name, reason=reason)
        elif self._opened_at is None and self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            log.warning(
                "circuit opened",
                circuit=self.name,
                consecutive_failures=self._failures,
                reset_seconds=self.reset_timeout,
                reason=reason,
            )
