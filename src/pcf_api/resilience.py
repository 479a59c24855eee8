"""Staying correct while a dependency is away: an availability tracker, a bounded write wait,
a circuit breaker, and the one back-off policy of every retry loop.

The tracker is the single place that knows whether the database is up and since when it is
down; health checks and failed or successful operations both feed it. Writes that find the
database down wait for it to come back — bounded in number and in time — instead of failing at
once, and are acknowledged only after they commit. The breaker stops calls to a remote service
that keeps failing, so callers fail (or fall back) at once instead of each waiting for a timeout.
Loops that must eventually succeed (the database at start-up, an events listener's reconnect)
retry through ``retry_forever``, so they all grow, cap, jitter and log their waits alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
)

from pcf_api.errors import AppError, ErrorCode, reason_of

# structlog's own logger (what pcf_api.observability configures), so this layer does not depend
# on the observability package.
log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

JITTER = 0.2
"""Each back-off delay is scaled by a random factor within ±20 %, so that replicas which lost a
dependency together do not retry in step."""


class BackoffWait:
    """A tenacity wait: ``initial`` seconds after the first failure, doubling after each
    further one up to ``cap``; each delay jittered by ±``JITTER`` and never above ``cap``."""

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.cap = cap
        self._exponential = wait_exponential(multiplier=initial, max=cap)
        self._uniform = uniform

    def __call__(self, retry_state: RetryCallState) -> float:
        factor = self._uniform(1 - JITTER, 1 + JITTER)
        return min(self._exponential(retry_state) * factor, self.cap)


def _reason(error: BaseException) -> Mapping[str, Any]:
    return {"reason": reason_of(error)}


async def retry_forever(
    operation: Callable[[], Awaitable[T]],
    *,
    initial: float,
    cap: float,
    log: structlog.stdlib.BoundLogger,
    retrying: str,
    recovered: str | None = None,
    fields: Mapping[str, Any] | None = None,
    describe: Callable[[BaseException], Mapping[str, Any]] = _reason,
    level: int = logging.WARNING,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    uniform: Callable[[float, float], float] = random.uniform,
) -> T:
    """``operation``'s result, calling it again after each failure (any ``Exception``), forever.

    For loops where waiting is better than giving up: a pod that waits for its database beats
    one that crash-loops while the database restarts. Delays follow ``BackoffWait``. Each
    failure is logged at ``level`` (a warning unless told) as ``retrying`` with ``fields``,
    ``attempt`` (from 1), ``retry_in_seconds`` and what ``describe`` makes of the error (by
    default ``reason``, its type; ``{"exc_info": error}`` logs the traceback); a success after
    failures is logged as info ``recovered`` with ``fields`` and ``attempt``. Cancellation is
    not a failure: it ends the loop. ``sleep`` and ``uniform`` are for tests.
    """
    context = dict(fields or {})
    attempts = 0

    async def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return await operation()

    def log_failure(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.log(
            level,
            retrying,
            **context,
            attempt=state.attempt_number,
            retry_in_seconds=round(delay, 3),
            **(describe(error) if error is not None else {}),
        )

    retry = AsyncRetrying(
        wait=BackoffWait(initial, cap, uniform=uniform),
        stop=stop_never,
        retry=retry_if_exception_type(Exception),
        before_sleep=log_failure,
        sleep=sleep,
    )
    result: T = await retry(attempt)
    if recovered is not None and attempts > 1:
        log.info(recovered, **context, attempt=attempts)
    return result


class DependencyUnavailable(Exception):
    """A start-up step could not reach ``dependency`` (its readiness entry's name): logged as
    one line naming it and ``reason``, without a traceback, since the cause is known."""

    def __init__(self, dependency: str, reason: str) -> None:
        self.dependency = dependency
        self.reason = reason
        super().__init__(f"{dependency} is unavailable: {reason}")


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
                        self.availability.mark_down(reason_of(exc))
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
