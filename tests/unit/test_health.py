"""Readiness registry (spec: health.py).

Overall status: ``starting`` until start-up is finished and every check has reported once;
``unhealthy`` when a critical check is down or the process is shutting down; ``degraded`` when
only non-critical checks are down; ``healthy`` otherwise. A check that hangs counts as down
after the timeout; failure details reach the logs, never the readiness document.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pcf_api.health import HealthRegistry, Status
from support.logs import LogCapture, capture_logs

ISO_UTC_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The service's real JSON logging pipeline, written to a buffer."""
    with capture_logs() as capture:
        yield capture


def make_check(state: dict[str, Any]) -> Any:
    """A check whose outcome the test flips: ``state["up"]``; counts its calls."""

    async def check() -> None:
        state["calls"] = state.get("calls", 0) + 1
        if not state.get("up", True):
            raise ConnectionError(state.get("error", "refused"))

    return check


async def ok() -> None:
    return None


async def failing() -> None:
    raise ConnectionError("connection refused")


async def hangs() -> None:
    await asyncio.Event().wait()


def registry(**kwargs: Any) -> HealthRegistry:
    kwargs.setdefault("version", "1.2.3")
    return HealthRegistry(**kwargs)


class TestStatusHttp:
    @pytest.mark.parametrize(
        ("status", "http"),
        [
            (Status.HEALTHY, 200),
            (Status.DEGRADED, 200),
            (Status.UNHEALTHY, 503),
            (Status.STARTING, 503),
        ],
    )
    def test_http_status(self, status: Status, http: int) -> None:
        assert status.http_status == http

    def test_values_are_lowercase_words(self) -> None:
        assert [s.value for s in Status] == ["healthy", "degraded", "unhealthy", "starting"]


class TestRegistration:
    def test_registering_the_same_name_twice_raises(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        with pytest.raises(ValueError, match="database"):
            health.register("database", ok, critical=False)

    def test_distinct_names_are_fine(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.register("cache", ok, critical=False)
        assert set(health.report()["services"]) == {"database", "cache"}


@pytest.mark.anyio
class TestStateTransitions:
    async def test_starting_before_mark_started_even_with_no_checks(self) -> None:
        health = registry()
        assert health.status() is Status.STARTING
        health.mark_started()
        assert health.status() is Status.HEALTHY

    async def test_starting_before_mark_started_even_when_checks_pass(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        await health.check_all()
        assert health.status() is Status.STARTING
        health.mark_started()
        assert health.status() is Status.HEALTHY

    async def test_starting_after_mark_started_until_every_check_reported(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.register("cache", failing, critical=False)
        health.mark_started()
        assert health.status() is Status.STARTING
        assert health.report()["status"] == "starting"
        await health.check_all()
        assert health.status() is Status.DEGRADED

    async def test_starting_while_one_check_has_not_answered_yet(self) -> None:
        gate = asyncio.Event()

        async def slow() -> None:
            await gate.wait()

        health = registry(timeout=10)
        health.register("database", ok, critical=True)
        health.register("search", slow, critical=False)
        health.mark_started()
        round_one = asyncio.create_task(health.check_all())
        await asyncio.sleep(0.01)
        # database has answered, search has not: still starting.
        assert health.report()["services"]["database"]["status"] == "up"
        assert health.report()["services"]["search"]["status"] == "unknown"
        assert health.status() is Status.STARTING
        gate.set()
        await round_one
        assert health.status() is Status.HEALTHY

    async def test_healthy_when_everything_is_up(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.register("cache", ok, critical=False)
        health.mark_started()
        await health.check_all()
        assert health.status() is Status.HEALTHY

    async def test_degraded_when_only_a_non_critical_check_is_down(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.register("cache", failing, critical=False)
        health.mark_started()
        await health.check_all()
        assert health.status() is Status.DEGRADED
        assert health.status().http_status == 200

    async def test_unhealthy_when_a_critical_check_is_down(self) -> None:
        health = registry()
        health.register("database", failing, critical=True)
        health.register("cache", ok, critical=False)
        health.mark_started()
        await health.check_all()
        assert health.status() is Status.UNHEALTHY
        assert health.status().http_status == 503

    async def test_unhealthy_wins_over_degraded(self) -> None:
        health = registry()
        health.register("database", failing, critical=True)
        health.register("cache", failing, critical=False)
        health.mark_started()
        await health.check_all()
        assert health.status() is Status.UNHEALTHY

    async def test_recovery_goes_back_to_healthy(self) -> None:
        database: dict[str, Any] = {"up": False}
        cache: dict[str, Any] = {"up": False}
        health = registry()
        health.register("database", make_check(database), critical=True)
        health.register("cache", make_check(cache), critical=False)
        health.mark_started()

        await health.check_all()
        assert health.status() is Status.UNHEALTHY
        database["up"] = True
        await health.check_all()
        assert health.status() is Status.DEGRADED
        cache["up"] = True
        await health.check_all()
        assert health.status() is Status.HEALTHY
        assert all(s["status"] == "up" for s in health.report()["services"].values())
        assert all("failure" not in s for s in health.report()["services"].values())

    async def test_shutting_down_is_unhealthy_with_a_message(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.mark_started()
        await health.check_all()
        assert health.status() is Status.HEALTHY
        assert not health.shutting_down
        assert "message" not in health.report()

        health.begin_shutdown()
        assert health.shutting_down
        assert health.status() is Status.UNHEALTHY
        report = health.report()
        assert report["status"] == "unhealthy"
        assert report["message"] == "shutting down"
        # Checks keep their results; only the overall status changes.
        assert report["services"]["database"]["status"] == "up"

    async def test_shutting_down_beats_starting(self) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        health.begin_shutdown()
        assert health.status() is Status.UNHEALTHY


@pytest.mark.anyio
class TestReport:
    async def test_document_shape(self) -> None:
        clock = FakeClock(100.0)
        health = registry(version="9.8.7", clock=clock)
        health.register("database", ok, critical=True)
        health.register("cache", failing, critical=False)
        health.mark_started()
        await health.check_all()
        # Registered after the round: it has not answered yet.
        health.register("search", ok, critical=False)
        clock.advance(12.3456)

        report = health.report()
        assert set(report) == {"status", "timestamp", "version", "uptime_seconds", "services"}
        assert report["status"] == "starting"
        assert ISO_UTC_MILLIS.match(report["timestamp"])
        assert report["version"] == "9.8.7"
        assert report["uptime_seconds"] == 12.346

        services = report["services"]
        assert list(services) == ["database", "cache", "search"]
        database = services["database"]
        assert set(database) == {"status", "critical", "latency_ms", "checked_at"}
        assert database["status"] == "up"
        assert database["critical"] is True
        assert isinstance(database["latency_ms"], float)
        assert database["latency_ms"] >= 0
        assert ISO_UTC_MILLIS.match(database["checked_at"])

        cache = services["cache"]
        assert set(cache) == {"status", "critical", "latency_ms", "checked_at", "failure"}
        assert cache["status"] == "down"
        assert cache["critical"] is False
        assert cache["failure"] == "error"

        assert services["search"] == {"status": "unknown", "critical": False}

    async def test_report_is_json_serialisable(self) -> None:
        health = registry()
        health.register("database", failing, critical=True)
        health.mark_started()
        await health.check_all()
        assert json.loads(json.dumps(health.report()))["services"]["database"]["status"] == "down"

    async def test_latency_is_measured_in_milliseconds(self) -> None:
        async def takes_50ms() -> None:
            await asyncio.sleep(0.05)

        health = registry()
        health.register("database", takes_50ms, critical=True)
        await health.check_all()
        latency = health.report()["services"]["database"]["latency_ms"]
        assert 40 <= latency < 2000

    async def test_uptime_counts_from_construction(self) -> None:
        clock = FakeClock(5.0)
        health = registry(clock=clock)
        assert health.report()["uptime_seconds"] == 0
        clock.advance(61.5)
        assert health.report()["uptime_seconds"] == 61.5


@pytest.mark.anyio
class TestFailures:
    async def test_a_check_that_never_returns_is_down_with_timeout_within_the_timeout(
        self,
    ) -> None:
        health = registry(timeout=0.1)
        health.register("database", hangs, critical=True)
        health.mark_started()
        began = time.monotonic()
        await asyncio.wait_for(health.check_all(), timeout=3)
        elapsed = time.monotonic() - began
        assert 0.09 <= elapsed < 1.0
        service = health.report()["services"]["database"]
        assert service["status"] == "down"
        assert service["failure"] == "timeout"
        assert health.status() is Status.UNHEALTHY

    async def test_checks_run_concurrently(self) -> None:
        health = registry(timeout=0.2)
        for name in ("a", "b", "c", "d"):
            health.register(name, hangs, critical=False)
        began = time.monotonic()
        await health.check_all()
        # Four hanging checks, one timeout's worth of waiting (not four).
        assert time.monotonic() - began < 0.6
        assert {s["failure"] for s in health.report()["services"].values()} == {"timeout"}

    async def test_an_exception_is_error_and_its_text_stays_out_of_the_report(
        self, logs: LogCapture
    ) -> None:
        async def leaky() -> None:
            raise OSError("could not connect to db-primary.internal.example:5432 as admin")

        health = registry()
        health.register("database", leaky, critical=True)
        health.mark_started()
        await health.check_all()

        report = health.report()
        service = report["services"]["database"]
        assert service["status"] == "down"
        assert service["failure"] == "error"
        document = json.dumps(report)
        for secret in ("db-primary", "internal.example", "5432", "admin", "OSError"):
            assert secret not in document
        # ... but operators can find it in the log.
        (line,) = logs.find("dependency down", service="database")
        assert "db-primary.internal.example:5432" in line["reason"]
        assert line["reason"].startswith("OSError: ")

    async def test_an_exception_without_text_is_logged_by_its_class(self, logs: LogCapture) -> None:
        async def bare() -> None:
            raise RuntimeError

        health = registry()
        health.register("database", bare, critical=True)
        await health.check_all()
        assert health.report()["services"]["database"]["failure"] == "error"
        (line,) = logs.find("dependency down", service="database")
        assert line["reason"] == "RuntimeError"

    async def test_timeout_reason_is_logged(self, logs: LogCapture) -> None:
        health = registry(timeout=0.05)
        health.register("database", hangs, critical=True)
        await health.check_all()
        (line,) = logs.find("dependency down", service="database")
        assert line["reason"] == "no answer within 0.05 s"

    async def test_a_check_that_fails_at_call_time_is_down(self) -> None:
        def not_async() -> Any:
            raise ValueError("boom")

        health = registry()
        health.register("database", not_async, critical=True)
        await health.check_all()
        assert health.report()["services"]["database"]["failure"] == "error"

    async def test_a_failing_check_does_not_stop_the_others(self) -> None:
        health = registry(timeout=0.05)
        health.register("hung", hangs, critical=False)
        health.register("broken", failing, critical=False)
        health.register("fine", ok, critical=True)
        health.mark_started()
        await health.check_all()
        services = health.report()["services"]
        assert services["fine"]["status"] == "up"
        assert services["hung"]["failure"] == "timeout"
        assert services["broken"]["failure"] == "error"
        assert health.status() is Status.DEGRADED


@pytest.mark.anyio
class TestLogging:
    async def test_non_critical_down_warns_once_per_warn_interval(self, logs: LogCapture) -> None:
        clock = FakeClock()
        health = registry(warn_interval=30.0, clock=clock)
        health.register("cache", failing, critical=False)

        def warnings() -> list[dict[str, Any]]:
            return logs.find("dependency down", service="cache")

        await health.check_all()  # t=0: goes down, warns
        assert len(warnings()) == 1
        first = warnings()[0]
        assert first["level"] == "WARN"
        assert first["critical"] is False
        assert first["module"] == "pcf_api.health"

        for _ in range(3):  # t=10, 20, 29.9: still down, quiet
            clock.advance(9.97)
            await health.check_all()
        assert len(warnings()) == 1

        clock.advance(0.1)  # t=30: warn again
        await health.check_all()
        assert len(warnings()) == 2

        clock.advance(29)  # t=59: quiet
        await health.check_all()
        assert len(warnings()) == 2

        clock.advance(1)  # t=60: warn again
        await health.check_all()
        assert len(warnings()) == 3
        assert all(line["level"] == "WARN" for line in warnings())

    async def test_critical_down_logs_at_error(self, logs: LogCapture) -> None:
        health = registry()
        health.register("database", failing, critical=True)
        await health.check_all()
        (line,) = logs.find("dependency down", service="database")
        assert line["level"] == "ERROR"
        assert line["critical"] is True

    async def test_critical_down_is_rate_limited_too(self, logs: LogCapture) -> None:
        clock = FakeClock()
        health = registry(warn_interval=30.0, clock=clock)
        health.register("database", failing, critical=True)
        await health.check_all()
        clock.advance(5)
        await health.check_all()
        assert len(logs.find("dependency down", service="database")) == 1

    async def test_recovery_logs_info_once(self, logs: LogCapture) -> None:
        clock = FakeClock()
        state: dict[str, Any] = {"up": False}
        health = registry(clock=clock)
        health.register("cache", make_check(state), critical=False)
        await health.check_all()
        state["up"] = True
        clock.advance(1)
        await health.check_all()
        await health.check_all()
        (line,) = logs.find("dependency recovered", service="cache")
        assert line["level"] == "INFO"
        assert line["critical"] is False

    async def test_going_down_again_after_recovery_warns_at_once(self, logs: LogCapture) -> None:
        clock = FakeClock()
        state: dict[str, Any] = {"up": False}
        health = registry(warn_interval=30.0, clock=clock)
        health.register("cache", make_check(state), critical=False)
        await health.check_all()
        clock.advance(1)
        state["up"] = True
        await health.check_all()
        clock.advance(1)
        state["up"] = False
        await health.check_all()  # 2 s after the first warning, but a new outage
        assert len(logs.find("dependency down", service="cache")) == 2

    async def test_healthy_checks_log_nothing(self, logs: LogCapture) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        await health.check_all()
        await health.check_all()
        assert logs.find("dependency down") == []
        assert logs.find("dependency recovered") == []

    async def test_first_success_is_not_a_recovery(self, logs: LogCapture) -> None:
        health = registry()
        health.register("database", ok, critical=True)
        await health.check_all()
        assert logs.find("dependency recovered") == []


@pytest.mark.anyio
class TestRun:
    async def test_run_checks_at_once_then_repeats_on_the_interval(self) -> None:
        state: dict[str, Any] = {}
        third_round = asyncio.Event()
        counted = make_check(state)

        async def check() -> None:
            await counted()
            if state["calls"] >= 3:
                third_round.set()

        health = registry(interval=0.01)
        health.register("database", check, critical=True)
        task = asyncio.create_task(health.run())
        try:
            await asyncio.wait_for(third_round.wait(), timeout=3)
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        calls = state["calls"]
        await asyncio.sleep(0.05)
        assert state["calls"] == calls  # cancelled means stopped

    async def test_run_waits_for_the_interval_between_rounds(self) -> None:
        state: dict[str, Any] = {}
        health = registry(interval=60)
        health.register("database", make_check(state), critical=True)
        health.mark_started()
        task = asyncio.create_task(health.run())
        try:
            await asyncio.sleep(0.1)
            assert state.get("calls") == 1
            assert health.status() is Status.HEALTHY
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.anyio
async def test_a_check_that_raises_cancelled_error_itself_is_down_and_the_loop_goes_on() -> None:
    calls = 0

    async def cancels_itself() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    registry = HealthRegistry(version="t", interval=0.01, timeout=1)
    registry.register("odd", cancels_itself, critical=True)
    registry.mark_started()
    runner = asyncio.create_task(registry.run())
    await asyncio.sleep(0.1)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert calls >= 2
    assert registry.status() is Status.UNHEALTHY
    assert registry.report()["services"]["odd"]["failure"] == "error"


@pytest.mark.anyio
class TestOverrunningChecks:
    """A check past its timeout is reported down but left running: cancelling a query midway
    makes the pool terminate the connection, and on aiosqlite 0.22 that can hang the exit."""

    async def test_an_overrunning_check_is_not_cancelled(self) -> None:
        release = asyncio.Event()
        finished: list[bool] = []

        async def slow() -> None:
            await release.wait()
            finished.append(True)

        health = registry(timeout=0.05)
        health.register("database", slow, critical=True)
        await health.check_all()
        assert health.report()["services"]["database"]["failure"] == "timeout"
        release.set()
        await asyncio.sleep(0.01)
        assert finished == [True]

    async def test_no_second_check_starts_while_the_first_still_runs(self) -> None:
        release = asyncio.Event()
        calls = 0

        async def slow() -> None:
            nonlocal calls
            calls += 1
            await release.wait()

        health = registry(timeout=0.02)
        health.register("database", slow, critical=True)
        await health.check_all()
        began = time.monotonic()
        await health.check_all()
        assert time.monotonic() - began < 0.02  # answered at once: nothing new was started
        assert calls == 1
        assert health.report()["services"]["database"]["failure"] == "timeout"
        release.set()
        await asyncio.sleep(0.01)
        await health.check_all()
        assert calls == 2
        assert health.report()["services"]["database"]["status"] == "up"

    async def test_a_late_failure_is_not_reported_as_an_unretrieved_task_exception(self) -> None:
        reported: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        try:

            async def fails_late() -> None:
                await asyncio.sleep(0.03)
                raise ConnectionError("too late")

            health = registry(timeout=0.01)
            health.register("database", fails_late, critical=True)
            await health.check_all()
            await asyncio.sleep(0.06)
            await health.close()
            del health
            gc.collect()
            await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(previous_handler)
        assert reported == []

    async def test_close_lets_a_running_check_finish_within_the_timeout(self) -> None:
        release = asyncio.Event()
        outcome: list[str] = []

        async def gated() -> None:
            try:
                await release.wait()
                outcome.append("finished")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        health = registry(timeout=1.0)
        health.register("database", gated, critical=True)
        checking = asyncio.create_task(health.check_all())
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(health.close())
        await asyncio.sleep(0.01)
        assert not closing.done()  # waiting for the check, not cancelling it
        release.set()
        await closing
        await checking
        assert outcome == ["finished"]

    async def test_close_cancels_a_check_still_running_after_the_timeout(self) -> None:
        cancelled = asyncio.Event()

        async def stuck() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        health = registry(timeout=0.02)
        health.register("database", stuck, critical=True)
        await health.check_all()
        began = time.monotonic()
        await health.close()
        assert cancelled.is_set()
        assert time.monotonic() - began < 0.5

    async def test_close_without_running_checks_returns_at_once_and_stops_new_ones(self) -> None:
        state: dict[str, Any] = {}
        health = registry()
        health.register("database", make_check(state), critical=True)
        await health.close()
        await health.check_all()
        assert state == {}
