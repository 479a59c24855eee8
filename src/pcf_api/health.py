"""Readiness: a registry of dependency checks run in the background, answered from their results.

The readiness endpoint never waits on a dependency. Each check runs on its own interval with
its own timeout, and ``/health/ready`` reports the latest results, so it answers at once even
while a check hangs; a check that overruns its timeout counts as down.

A check that overruns is not cancelled: it keeps running in its own task, and no second one is
started beside it. Cancelling a database ping in the middle of a query makes the pool terminate
that connection (a reconnect for asyncpg; for aiosqlite 0.22, a close racing its own worker
thread that can leave a task waiting forever and hang the process at exit). ``close`` gives the
checks still running one timeout to finish before it cancels them.

Overall status: ``starting`` until start-up work is finished and every check has reported once;
``unhealthy`` when a critical check is down or the process is shutting down; ``degraded`` when
only non-critical checks are down; ``healthy`` otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from pcf_api.errors import utc_timestamp

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

Check = Callable[[], Awaitable[None]]
"""A dependency check: returns when the dependency works, raises when it does not."""


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    STARTING = "starting"

    @property
    def http_status(self) -> int:
        return 200 if self in (Status.HEALTHY, Status.DEGRADED) else 503


@dataclass
class CheckResult:
    up: bool
    latency_ms: float
    checked_at: str
    failure: str | None = None
    """``timeout`` or ``error``: what the readiness document shows. Details go to the log only,
    since an exception message can name hosts or queries."""


@dataclass
class _Registration:
    name: str
    check: Check
    critical: bool
    result: CheckResult | None = None
    last_warned: float = field(default=-float("inf"))
    running: asyncio.Task[None] | None = None


class HealthRegistry:
    """Holds the checks and their latest results; ``run`` keeps the results fresh."""

    def __init__(
        self,
        *,
        version: str,
        interval: float = 5.0,
        timeout: float = 2.0,
        warn_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._version = version
        self._interval = interval
        self._timeout = timeout
        self._warn_interval = warn_interval
        self._clock = clock
        self._started_at = clock()
        self._checks: dict[str, _Registration] = {}
        self._startup_complete = False
        self._shutting_down = False
        self._closed = False

    def register(self, name: str, check: Check, *, critical: bool) -> None:
        if name in self._checks:
            raise ValueError(f"health check {name!r} is already registered")
        self._checks[name] = _Registration(name=name, check=check, critical=critical)

    def mark_started(self) -> None:
        """Start-up work (migrations, connections, …) is finished."""
        self._startup_complete = True

    def begin_shutdown(self) -> None:
        """Readiness fails from now on so load balancers stop routing here."""
        self._shutting_down = True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def status(self) -> Status:
        if self._shutting_down:
            return Status.UNHEALTHY
        results = [(reg.critical, reg.result) for reg in self._checks.values()]
        if not self._startup_complete or any(result is None for _, result in results):
            return Status.STARTING
        if any(critical and result is not None and not result.up for critical, result in results):
            return Status.UNHEALTHY
        if any(result is not None and not result.up for _, result in results):
            return Status.DEGRADED
        return Status.HEALTHY

    def report(self) -> dict[str, Any]:
        """The readiness document: status, timestamp, version, uptime and each service."""
        services: dict[str, Any] = {}
        for reg in self._checks.values():
            entry: dict[str, Any] = {"critical": reg.critical}
            if reg.result is None:
                entry["status"] = "unknown"
            else:
                entry["status"] = "up" if reg.result.up else "down"
                entry["latency_ms"] = reg.result.latency_ms
                entry["checked_at"] = reg.result.checked_at
                if reg.result.failure:
                    entry["failure"] = reg.result.failure
            services[reg.name] = entry
        document: dict[str, Any] = {
            "status": self.status().value,
            "timestamp": utc_timestamp(),
            "version": self._version,
            "uptime_seconds": round(self._clock() - self._started_at, 3),
            "services": services,
        }
        if self._shutting_down:
            document["message"] = "shutting down"
        return document

    async def check_all(self) -> None:
        """Run every check once, concurrently; each answer is awaited for at most the timeout."""
        await asyncio.gather(*(self._run_one(reg) for reg in self._checks.values()))

    async def run(self) -> None:
        """Check on the interval until cancelled."""
        while True:
            await self.check_all()
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Start no more checks; give those still running one timeout, then cancel them."""
        self._closed = True
        running = [reg.running for reg in self._checks.values() if reg.running is not None]
        if not running:
            return
        _, overdue = await asyncio.wait(running, timeout=self._timeout)
        for task in overdue:
            task.cancel()
        if overdue:
            await asyncio.wait(overdue)

    async def _run_one(self, reg: _Registration) -> None:
        if self._closed:
            return
        began = self._clock()
        failure: str | None = None
        reason = ""
        if reg.running is not None and not reg.running.done():
            failure, reason = "timeout", "the previous check has still not answered"
        else:
            reg.running = task = asyncio.create_task(_call(reg.check), name=f"check {reg.name}")
            task.add_done_callback(_retrieve_outcome)
            await asyncio.wait([task], timeout=self._timeout)
            if not task.done():
                failure, reason = "timeout", f"no answer within {self._timeout:g} s"
            elif task.cancelled():
                failure, reason = "error", "the check was cancelled"
            elif (error := task.exception()) is not None:
                failure, reason = "error", _describe(error)
        latency_ms = round((self._clock() - began) * 1000, 2)
        previous = reg.result
        reg.result = result = CheckResult(failure is None, latency_ms, utc_timestamp(), failure)
        self._log_transition(reg, previous, result, reason)

    def _log_transition(
        self,
        reg: _Registration,
        previous: CheckResult | None,
        result: CheckResult,
        reason: str,
    ) -> None:
        was_up = previous.up if previous is not None else None
        if result.up:
            if was_up is False:
                log.info("dependency recovered", service=reg.name, critical=reg.critical)
            return
        now = self._clock()
        if was_up is not False or now - reg.last_warned >= self._warn_interval:
            reg.last_warned = now
            emit = log.error if reg.critical else log.warning
            emit("dependency down", service=reg.name, critical=reg.critical, reason=reason)


async def _call(check: Check) -> None:
    """Inside the task, so a check that fails when called fails like one that fails later."""
    await check()


def _retrieve_outcome(task: asyncio.Task[None]) -> None:
    """Marks the outcome of a check that finished after its timeout as seen (its failure was
    already reported as a timeout), so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    """Exception class and message, for the readiness document and logs only."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
