"""Note events for GraphQL subscriptions: one interface, three transports.

``MemoryBroker`` (``memory``) stays inside one process. ``PostgresBroker`` (``postgres``,
LISTEN/NOTIFY) and ``RedisBroker`` (``redis``, pub/sub) share events between replicas: every
replica sees the same events in the same order, the order the server received them in. What
they share — the interface, subscriptions, the reconnecting listener — is in ``base``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pcf_api.store.events.base import (
    DEFAULT_CHANNEL,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    MAX_EVENT_BYTES,
    EventBroker,
    EventsUnavailable,
    FanOutBroker,
    ListeningBroker,
    Subscription,
    event_bytes,
)
from pcf_api.store.events.memory import MemoryBroker
from pcf_api.store.events.postgres import PostgresBroker
from pcf_api.store.events.redis import RedisBroker

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "MAX_EVENT_BYTES",
    "EventBroker",
    "EventsUnavailable",
    "FanOutBroker",
    "ListeningBroker",
    "MemoryBroker",
    "PostgresBroker",
    "RedisBroker",
    "Subscription",
    "create_broker",
    "event_bytes",
]


def create_broker(
    kind: Literal["memory", "postgres", "redis"],
    url: str | None,
    *,
    password: Callable[[], str | None] | None = None,
    redis_timeout: float = 1.0,
) -> EventBroker:
    """The broker for ``kind``: ``url`` is the database URL for postgres (``password``, the
    current database password), Redis's for redis (each wait bounded by ``redis_timeout``)."""
    if kind == "memory":
        return MemoryBroker()
    if url is None:
        raise ValueError(f"the {kind} events broker needs a URL")
    if kind == "postgres":
        return PostgresBroker(url, password=password)
    if kind == "redis":
        return RedisBroker(url, timeout=redis_timeout)
    raise ValueError(f"unknown events broker {kind!r}")
