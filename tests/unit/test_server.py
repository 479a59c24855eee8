"""The process-level parts of serving: how the garbage collector is set once start-up is done,
how the listener stops taking connections."""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Iterator

import pytest

from pcf_api.server import ignore_new_connections, settle_garbage_collector


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


@pytest.mark.host_only  # the socket filter needs CAP_NET_ADMIN
def test_a_listener_told_to_ignore_new_connections_still_hands_over_those_it_queued() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        with socket.create_connection(address, timeout=1) as queued:
            assert ignore_new_connections(listener)

            with pytest.raises(TimeoutError):  # unanswered, not queued to be reset at the close
                socket.create_connection(address, timeout=0.3)
            accepted, _ = listener.accept()
            with accepted:
                queued.sendall(b"GET / HTTP/1.1\r\n")
                assert accepted.recv(64) == b"GET / HTTP/1.1\r\n"
