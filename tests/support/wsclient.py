"""A minimal, independent GraphQL-over-WebSocket client (graphql-transport-ws and graphql-ws),
written from the protocol documents, so subscription tests do not rely on the server library.

https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md
https://github.com/apollographql/subscriptions-transport-ws/blob/master/PROTOCOL.md
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.typing import Subprotocol

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


class SubscriptionClient:
    """``async with`` opens the socket, sends ``connection_init`` (with ``init_payload``) and
    expects the ack; ``init=False`` stops after the handshake, for tests of refusals."""

    def __init__(
        self,
        url: str,
        protocol: str = TRANSPORT_WS,
        headers: dict[str, str] | None = None,
        *,
        init_payload: dict[str, Any] | None = None,
        init: bool = True,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.protocol = protocol
        self.headers = headers or {}
        self.init_payload = init_payload or {}
        self.init = init
        self.connect_options = connect_options or {}
        """More arguments for ``websockets.connect`` (e.g. ``sock``, ``max_queue``)."""
        self.socket: Any = None

    async def __aenter__(self) -> SubscriptionClient:
        self.socket = await websockets.connect(
            self.url,
            subprotocols=[Subprotocol(self.protocol)],
            additional_headers=self.headers,
            **self.connect_options,
        )
        if self.init:
            await self.connection_init()
            ack = await self.receive()
            assert ack["type"] == "connection_ack", ack
        return self

    async def connection_init(self, payload: dict[str, Any] | None = None) -> None:
        init = self.init_payload if payload is None else payload
        await self.send({"type": "connection_init", "payload": init})

    async def closed(self, within: float = 10.0) -> tuple[int, list[dict[str, Any]]]:
        """Wait for the server to close the socket: (close code, messages received before)."""
        messages: list[dict[str, Any]] = []
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(self.socket.recv(), within)))
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is None:
                raise AssertionError("closed without a close frame from the server") from None
            return closed.rcvd.code, messages

    async def __aexit__(self, *_: object) -> None:
        await self.socket.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def receive(self, within: float = 10.0) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.socket.recv(), within)
            message: dict[str, Any] = json.loads(raw)
            if message["type"] not in ("ka", "ping", "pong"):
                return message
            if message["type"] == "ping":
                await self.send({"type": "pong"})

    async def subscribe(
        self, operation_id: str, query: str, variables: dict[str, Any] | None = None
    ) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload: dict[str, Any] = {"query": query}
        if variables:
            payload["variables"] = variables
        await self.send({"id": operation_id, "type": kind, "payload": payload})

    async def next_data(self, within: float = 10.0) -> tuple[str, dict[str, Any]]:
        """(operation id, data) of the next result; fails on anything else."""
        message = await self.receive(within)
        expected = "next" if self.protocol == TRANSPORT_WS else "data"
        assert message["type"] == expected, message
        return message["id"], message["payload"]["data"]

    async def stop(self, operation_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.send({"id": operation_id, "type": kind})
