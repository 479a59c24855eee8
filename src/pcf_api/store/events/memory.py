"""Events inside one process: enough when a single replica serves every client."""

from __future__ import annotations

from pcf_api.store.events.base import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    FanOutBroker,
    encode_event,
)
from pcf_api.store.models import NoteEvent


class MemoryBroker(FanOutBroker):
    """Events inside one process: enough when a single replica serves every client."""

    backend = "memory"

    def __init__(
        self, *, queue_size: int = DEFAULT_QUEUE_SIZE, queue_bytes: int = DEFAULT_QUEUE_BYTES
    ) -> None:
        super().__init__(queue_size, queue_bytes)
        self._started = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the events broker is closed")
        self._started = True

    async def close(self) -> None:
        self._closed = True
        self._end_subscriptions()

    async def publish(self, event: NoteEvent) -> None:
        # Required here too, so that code tested against this broker runs on the others.
        if not self._started or self._closed:
            raise RuntimeError("the events broker is not running")
        encode_event(event)  # the same size limit as the other backends
        self._deliver(event)
