"""Availability tracking and the bounded write wait: what keeps acknowledged writes safe."""

from __future__ import annotations

import asyncio

import pytest

from pcf_api.errors import AppError, ErrorCode
from pcf_api.resilience import Availability, WriteGate

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
    outcomes = [Unavailable(), Unavailable(), "committed"]

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
