"""Staying correct while a dependency is away: an availability tracker and a bounded write wait.

The tracker is the single place that knows whether the database is up and since when it is
down; health checks and failed or successful operations both feed it. Writes that find the
database down wait for it to come back — bounded in number and in time — instead of failing at
once, and are acknowledged only after they commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
