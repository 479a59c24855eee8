"""Redis pub/sub: events shared between replicas through one Redis channel.

Like the PostgreSQL backend, ``publish`` only sends, and one subscribed connection per process
delivers what Redis relays, reconnecting with back-off; pub/sub keeps no history either.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NoReturn

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from pcf_api.store.events.base import DEFAULT_CHANNEL, DEFAULT_QUEUE_SIZE, ListeningBroker


@dataclass
class _RedisListener:
    client: Redis
    pubsub: PubSub


class RedisBroker(ListeningBroker[_RedisListener, Redis]):
    """Redis pub/sub on one channel; a message can hold any event, so nothing is chunked."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        timeout: float = 1.0,
    ) -> None:
        super().__init__(
            channel=channel,
            queue_size=queue_size,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            timeout=timeout,
        )
        self._url = url

    async def _open_publisher(self) -> Redis:
        # One immediate retry replaces a pooled connection the server has closed; more, or one
        # after a timeout, would hold up the mutation that publishes while Redis is away.
        return Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
        )

    async def _close_publisher(self, publisher: Redis) -> None:
        await publisher.aclose()

    async def _send(self, publisher: Redis, data: bytes) -> None:
        await publisher.publish(self.channel, data)

    async def _listen(self) -> _RedisListener:
        # No retries inside redis-py (not even its reconnect-then-raise): reconnecting is the
        # supervisor's job, so that it is logged and re-subscribes the same way every time.
        client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), retries=0, supported_errors=()),
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
        )
        listener = _RedisListener(client, client.pubsub())
        try:
            async with asyncio.timeout(self._timeout):
                await listener.pubsub.subscribe(self.channel)
                # In effect once confirmed: an event published after start() returns arrives.
                await listener.pubsub.get_message(timeout=None)
        except BaseException:
            await self._release(listener)
            raise
        return listener

    async def _watch(self, listener: _RedisListener) -> NoReturn:
        awaiting_pong = False
        while True:
            message = await listener.pubsub.get_message(timeout=self._timeout)
            if message is None:
                # Quiet for a whole interval: make sure the connection still answers.
                if awaiting_pong:
                    raise TimeoutError("the server did not answer PING")
                await listener.pubsub.ping()
                awaiting_pong = True
            elif message["type"] == "pong":
                awaiting_pong = False
            elif message["type"] == "message":
                self._receive(message["data"])

    async def _release(self, listener: _RedisListener) -> None:
        await listener.pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.client.aclose()
