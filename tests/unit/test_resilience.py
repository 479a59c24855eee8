"""Availability tracking and the bounded write wait: what keeps acknowledged writes safe."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import pytest
import structlog

from pcf_api.errors import AppError, ErrorCode, StoreUnavailable
from pcf_api.resilience import (
    Availability,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    WriteGate,
    retry_forever,
)
from support.logs import capture_logs

pytestmark = pytest.mark.anyio


class Unavailable(Exception):
    """Stands for "the database cannot be reached"."""


def gate(availability: Availability, *, capacity: int = 10, max_wait: float = 1.0) -> WriteGate:
    return WriteGate(
        availability,
        capacity=capacity,
        max_wait=max_wait,
        is_unavailable=lambda exc: isinstance(exc, Unavailable),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_availability_counts_downtime_from_the_first_failure_only() -> None:
    clock = Clock()
    downs: list[str] = []
    availability = Availability("db", clock=clock, on_down=lambda: downs.append("down"))
    assert availability.is_up
    assert availability.down_for() == 0
    availability.mark_down("refused")
    clock.now += 7
    availability.mark_down("refused again")
    assert not availability.is_up
    assert availability.down_for() == 7
    assert downs == ["down"]
    availability.mark_up()
    assert availability.is_up
    assert availability.down_for() == 0
    availability.mark_up()
    assert availability.is_up


async def test_a_write_runs_at_once_while_the_database_is_up() -> None:
    async def write() -> str:
        return "committed"

    assert await gate(Availability("db")).run(write) == "committed"


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("constraint")

    availability = Availability("db")
    with pytest.raises(ValueError, match="constraint"):
        await gate(availability).run(write)
    assert calls == 1
    assert availability.is_up


async def test_a_write_that_finds_the_database_down_waits_and_commits_after_recovery() -> None:
    availability = Availability("db")
    attempts = 0

    async def write() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Unavailable
        return "committed"

    write_gate = gate(availability, max_wait=5)
    task = asyncio.create_task(write_gate.run(write))
    await asyncio.sleep(0.05)
    assert not availability.is_up
    assert write_gate.waiting == 1
    assert not task.done()
    availability.mark_up()
    assert await task == "committed"
    assert attempts == 2
    assert write_gate.waiting == 0


async def test_a_write_waiting_past_its_deadline_is_refused_with_service_unavailable() -> None:
    availability = Availability("db")
    availability.mark_down("gone")

    async def write() -> str:
        raise AssertionError("must not run while down")

    write_gate = gate(availability, max_wait=0.1)
    with pytest.raises(AppError) as refused:
        await write_gate.run(write)
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert refused.value.headers["Retry-After"] == "5"
    assert write_gate.waiting == 0


async def test_a_zero_wait_refuses_at_once() -> None:
    availability = Availability("db")
    availability.mark_down("gone")

    async def write() -> str:
        return "never"

    with pytest.raises(AppError) as refused:
        await gate(availability, max_wait=0).run(write)
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE


async def test_a_full_queue_refuses_new_writes_at_once() -> None:
    availability = Availability("db")
    availability.mark_down("gone")

    async def write() -> str:
        return "committed"

    write_gate = gate(availability, capacity=2, max_wait=5)
    waiting = [asyncio.create_task(write_gate.run(write)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert write_gate.waiting == 2
    with pytest.raises(AppError) as refused:
        await write_gate.run(write)
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "queue is full" in refused.value.message
    availability.mark_up()
    assert await asyncio.gather(*waiting) == ["committed", "committed"]


async def test_a_write_that_fails_again_after_recovery_waits_again() -> None:
    availability = Availability("db")
    outcomes: list[Exception | str] = [Unavailable(), Unavailable(), "committed"]

    async def write() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    task = asyncio.create_task(gate(availability, max_wait=5).run(write))
    for _ in range(2):
        await asyncio.sleep(0.02)
        availability.mark_up()
    assert await task == "committed"


# --- Circuit breaker --------------------------------------------------------------------------


class Refused(Exception):
    """Stands for "the remote service did not answer"."""


class Rejected(Exception):
    """Stands for "the remote service answered: your request is wrong"."""


def state_of(circuit: CircuitBreaker) -> BreakerState:
    """The state now (a call, so that type checkers do not keep an earlier assertion's)."""
    return circuit.state


def breaker(clock: Clock, *, threshold: int = 3, reset: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(
        "spicedb",
        failure_threshold=threshold,
        reset_timeout=reset,
        is_failure=lambda exc: isinstance(exc, Refused),
        clock=clock,
    )


class Service:
    """A remote call that counts how often it is reached; raises ``error`` while one is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "answer"


async def fail(circuit: CircuitBreaker, service: Service, times: int) -> None:
    service.error = Refused()
    for _ in range(times):
        with pytest.raises(Refused):
            await circuit.call(service)


async def test_a_breaker_needs_a_threshold_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", failure_threshold=0, reset_timeout=1)


async def test_a_closed_breaker_passes_calls_and_their_results() -> None:
    circuit, service = breaker(Clock()), Service()

    assert await circuit.call(service) == "answer"
    assert circuit.state is BreakerState.CLOSED
    assert service.calls == 1


async def test_failures_below_the_threshold_keep_it_closed_and_a_success_resets_the_count() -> None:
    circuit, service = breaker(Clock()), Service()

    await fail(circuit, service, 2)
    assert circuit.consecutive_failures == 2
    service.error = None
    await circuit.call(service)
    await fail(circuit, service, 2)

    assert circuit.state is BreakerState.CLOSED
    assert circuit.consecutive_failures == 2


async def test_consecutive_failures_open_it_and_calls_are_refused_without_reaching_it() -> None:
    clock, service = Clock(), Service()
    circuit = breaker(clock)
    with capture_logs() as logs:
        await fail(circuit, service, 3)
    clock.now += 4

    with pytest.raises(CircuitOpenError) as refused:
        await circuit.call(service)

    assert circuit.state is BreakerState.OPEN
    assert service.calls == 3
    assert refused.value.name == "spicedb"
    assert refused.value.retry_after == 6
    assert logs.find("circuit opened", circuit="spicedb", consecutive_failures=3)


async def test_errors_that_prove_the_service_answered_do_not_count_as_failures() -> None:
    circuit, service = breaker(Clock(), threshold=1), Service()
    service.error = Rejected()

    for _ in range(3):
        with pytest.raises(Rejected):
            await circuit.call(service)

    assert circuit.state is BreakerState.CLOSED
    assert service.calls == 3


async def test_after_the_reset_timeout_one_probe_passes_and_its_success_closes_it() -> None:
    clock, service = Clock(), Service()
    circuit = breaker(clock)
    await fail(circuit, service, 3)
    clock.now += 10
    assert circuit.state is BreakerState.HALF_OPEN
    service.error = None

    with capture_logs() as logs:
        assert await circuit.call(service) == "answer"

    assert state_of(circuit) is BreakerState.CLOSED
    assert circuit.consecutive_failures == 0
    assert logs.find("circuit closed", circuit="spicedb")


async def test_while_the_probe_is_in_flight_other_calls_are_refused() -> None:
    clock = Clock()
    circuit, service = breaker(clock), Service()
    await fail(circuit, service, 3)
    clock.now += 10
    release = asyncio.Event()

    async def slow_probe() -> str:
        await release.wait()
        return "probed"

    probe = asyncio.create_task(circuit.call(slow_probe))
    await asyncio.sleep(0)
    assert circuit.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpenError) as refused:
        await circuit.call(service)
    release.set()

    assert await probe == "probed"
    assert refused.value.retry_after == 0
    assert state_of(circuit) is BreakerState.CLOSED


async def test_a_failed_probe_opens_it_for_another_reset_period() -> None:
    clock, service = Clock(), Service()
    circuit = breaker(clock)
    await fail(circuit, service, 3)
    clock.now += 10

    with capture_logs() as logs:
        await fail(circuit, service, 1)

    assert circuit.state is BreakerState.OPEN
    assert logs.find("circuit probe failed", circuit="spicedb", reason="Refused")
    clock.now += 9.5
    with pytest.raises(CircuitOpenError):
        await circuit.call(service)
    clock.now += 0.5
    service.error = None
    assert await circuit.call(service) == "answer"


async def test_an_answer_to_the_probe_closes_it_even_when_it_is_an_error() -> None:
    clock, service = Clock(), Service()
    circuit = breaker(clock)
    await fail(circuit, service, 3)
    clock.now += 10
    service.error = Rejected()

    with pytest.raises(Rejected):
        await circuit.call(service)

    assert circuit.state is BreakerState.CLOSED


async def test_a_cancelled_probe_lets_the_next_call_probe_again() -> None:
    clock, service = Clock(), Service()
    circuit = breaker(clock)
    await fail(circuit, service, 3)
    clock.now += 10

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    probe = asyncio.create_task(circuit.call(hang))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    service.error = None
    assert await circuit.call(service) == "answer"
    assert circuit.state is BreakerState.CLOSED


async def test_calls_in_flight_when_it_opened_neither_reopen_nor_extend_it() -> None:
    clock = Clock()
    circuit, service = breaker(clock, threshold=1), Service()
    release = asyncio.Event()

    async def slow_failure() -> str:
        await release.wait()
        raise Refused

    in_flight = asyncio.create_task(circuit.call(slow_failure))
    await asyncio.sleep(0)
    await fail(circuit, service, 1)
    clock.now += 5
    release.set()
    with pytest.raises(Refused):
        await in_flight

    clock.now += 5
    assert circuit.state is BreakerState.HALF_OPEN


async def test_a_write_gate_marks_the_database_down_with_the_underlying_error_type() -> None:
    availability = Availability("database")
    write_gate = WriteGate(
        availability,
        capacity=1,
        max_wait=0.01,
        is_unavailable=lambda exc: isinstance(exc, StoreUnavailable),
    )

    async def write() -> None:
        raise StoreUnavailable("OperationalError: refused", reason="OperationalError")

    with capture_logs() as logs, pytest.raises(AppError):
        await write_gate.run(write)
    assert logs.find("dependency unavailable", service="database", reason="OperationalError")


# The shared back-off policy (retry_forever): what the database wait at start-up and the events
# listener's reconnect both follow.

log = structlog.stdlib.get_logger("tests.retry")


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError("refused")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def fixed(factor: float) -> Callable[[float, float], float]:
    """A "random" jitter factor that is always ``factor``."""

    def uniform(low: float, high: float) -> float:
        assert (low, high) == (0.8, 1.2)
        return factor

    return uniform


async def retry(
    operation: Callable[[], Awaitable[str]],
    sleeps: Sleeps,
    uniform: Callable[[float, float], float] | None = None,
    **options: object,
) -> str:
    return await retry_forever(
        operation,
        initial=0.2,
        cap=1.6,
        log=log,
        retrying="thing not reachable; retrying",
        recovered="thing reachable",
        sleep=sleeps,
        uniform=uniform or fixed(1.0),
        **options,  # type: ignore[arg-type]
    )


async def test_back_off_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    sleeps = Sleeps()
    assert await retry(Flaky(7), sleeps) == "answer"
    assert sleeps.delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 1.6, 1.6, 1.6])


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (0.8, [0.16, 0.32, 0.64, 1.28, 1.28]),
        (1.2, [0.24, 0.48, 0.96, 1.6, 1.6]),  # jitter never takes a delay past the cap
    ],
)
async def test_jitter_scales_each_delay_by_at_most_twenty_percent_and_the_cap_holds(
    factor: float, expected: list[float]
) -> None:
    sleeps = Sleeps()
    await retry(Flaky(5), sleeps, fixed(factor))
    assert sleeps.delays == pytest.approx(expected)


async def test_random_jitter_stays_within_its_bounds_and_the_delays_still_grow() -> None:
    for _ in range(50):
        sleeps = Sleeps()
        await retry(Flaky(6), sleeps, uniform=random.uniform)
        bases = [0.2, 0.4, 0.8, 1.6, 1.6, 1.6]
        assert all(
            0.8 * base <= delay <= min(1.2 * base, 1.6)
            for delay, base in zip(sleeps.delays, bases, strict=True)
        )
        assert sleeps.delays[:4] == sorted(sleeps.delays[:4])


async def test_each_failure_is_logged_with_the_attempt_the_delay_and_the_reason() -> None:
    sleeps = Sleeps()
    with capture_logs() as logs:
        await retry(Flaky(2), sleeps, fields={"backend": "x", "channel": "c"})
    failures = logs.records("thing not reachable; retrying")
    assert [line["level"] for line in failures] == ["WARN", "WARN"]
    assert [
        {key: line[key] for key in ("backend", "channel", "attempt", "retry_in_seconds", "reason")}
        for line in failures
    ] == [
        {
            "backend": "x",
            "channel": "c",
            "attempt": 1,
            "retry_in_seconds": 0.2,
            "reason": "ConnectionRefusedError",
        },
        {
            "backend": "x",
            "channel": "c",
            "attempt": 2,
            "retry_in_seconds": 0.4,
            "reason": "ConnectionRefusedError",
        },
    ]
    [recovered] = logs.records("thing reachable")
    assert (recovered["level"], recovered["attempt"], recovered["backend"]) == ("INFO", 3, "x")


async def test_the_delay_is_logged_rounded_to_milliseconds() -> None:
    sleeps = Sleeps()
    with capture_logs() as logs:
        await retry(Flaky(1), sleeps, fixed(1.123456))
    [line] = logs.records("thing not reachable; retrying")
    assert line["retry_in_seconds"] == 0.225
    assert sleeps.delays == [pytest.approx(0.2 * 1.123456)]


async def test_a_store_error_is_logged_by_its_underlying_type_and_describe_can_say_more() -> None:
    sleeps = Sleeps()
    error = StoreUnavailable("OperationalError: refused", reason="OperationalError")
    with capture_logs() as logs:
        await retry(Flaky(1, error), sleeps)
        await retry(
            Flaky(1), sleeps, describe=lambda exc: {"error": f"{type(exc).__name__}: {exc}"}
        )
    first, second = logs.records("thing not reachable; retrying")
    assert first["reason"] == "OperationalError"
    assert second["error"] == "ConnectionRefusedError: refused"
    assert "reason" not in second


async def test_a_loop_may_log_its_failures_as_errors_with_the_traceback() -> None:
    sleeps = Sleeps()
    with capture_logs() as logs:
        await retry(Flaky(1), sleeps, level=logging.ERROR, describe=lambda exc: {"exc_info": exc})
    [line] = logs.records("thing not reachable; retrying")
    assert line["level"] == "ERROR"
    assert "ConnectionRefusedError: refused" in logs.text()
    assert "Traceback" in logs.text()


async def test_success_at_once_logs_nothing() -> None:
    sleeps = Sleeps()
    with capture_logs() as logs:
        assert await retry(Flaky(0), sleeps) == "answer"
    assert logs.records() == []
    assert sleeps.delays == []


async def test_cancellation_is_no_failure_it_ends_the_loop() -> None:
    sleeps = Sleeps()

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry(cancelled, sleeps)
    assert sleeps.delays == []

    waiting = asyncio.create_task(
        retry_forever(
            Flaky(1000), initial=10, cap=10, log=log, retrying="thing not reachable; retrying"
        )
    )
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
