"""The process-level parts of serving: how the garbage collector is set once start-up is done."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pcf_api.server import settle_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_made_at_start_up_are_frozen_out_of_later_collections(
    restored_collector: None,
) -> None:
    made_at_start_up = [{"route": "/graphql"}]

    frozen = settle_garbage_collector(10_000)

    assert frozen == gc.get_freeze_count() > 0
    assert not any(tracked is made_at_start_up for tracked in gc.get_objects())


def test_garbage_left_by_start_up_is_collected_not_frozen(restored_collector: None) -> None:
    cycle = _Node()
    left_over = weakref.ref(cycle)
    del cycle

    settle_garbage_collector(10_000)

    assert left_over() is None


def test_the_young_generation_threshold_is_raised_and_the_others_kept(
    restored_collector: None,
) -> None:
    _, middle, old = gc.get_threshold()

    settle_garbage_collector(25_000)

    assert gc.get_threshold() == (25_000, middle, old)
