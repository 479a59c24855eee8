"""GraphQL over WebSocket: Strawberry's protocols (graphql-transport-ws and legacy graphql-ws).

The socket is admitted once, at the upgrade, through the same identity step as HTTP; each
operation on it then passes the rest of the admission pipeline (``AdmissionExtension``). On
shutdown every socket is closed with 1001 (going away), so clients reconnect to another pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send
from strawberry import Schema
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from pcf_api.auth.identity import Identity
from pcf_api.errors import AppError
from pcf_api.graphql.admission import Admission
from pcf_api.graphql.context import GraphQLContext, Services, make_context
from pcf_api.observability.tracecontext import current_trace_id

log = structlog.stdlib.get_logger(__name__)

CLOSE_GOING_AWAY = 1001
WS_POLICY_VIOLATION = 1008


class _Connection:
    """One WebSocket, closable from outside the protocol handler that owns it."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closing = asyncio.Event()

    async def receive(self) -> Message:
        if self._closing.is_set():
            return {"type": "websocket.disconnect", "code": CLOSE_GOING_AWAY}
        message_task = asyncio.ensure_future(self._receive())
        closing_task = asyncio.ensure_future(self._closing.wait())
        done, _ = await asyncio.wait(
            {message_task, closing_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if message_task in done:
            closing_task.cancel()
            return message_task.result()
        message_task.cancel()
        return {"type": "websocket.disconnect", "code": CLOSE_GOING_AWAY}

    async def send(self, message: Message) -> None:
        if not self._closing.is_set():
            await self._send(message)

    async def close(self, code: int) -> None:
        """Send the close frame, then end the handler's receive loop; later sends are dropped."""
        if self._closing.is_set():
            return
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": "server shutdown"})
        self._closing.set()


class SubscriptionsApp(GraphQL[GraphQLContext, None]):
    """Strawberry's WebSocket protocols with our admission and context."""

    def __init__(self, schema: Schema, *, admission: Admission, services: Services) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self.admission = admission
        self.services = services
        self.connections: set[_Connection] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            # A socket carries operations that all need an identity: none is refused. Refused
            # before the handshake completes, the client gets HTTP 403 and no socket, and holds
            # no subscription slot or budget.
            identity = await self.admission.require_identity(
                headers.get("authorization"), headers.get("x-demo-user")
            )
        except AppError as error:
            log.info("websocket refused", code=error.code.value, reason=error.message)
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        scope.setdefault("state", {})["identity"] = identity
        connection = _Connection(receive, send)
        self.connections.add(connection)
        try:
            await super().__call__(scope, connection.receive, connection.send)
        finally:
            self.connections.discard(connection)

    async def close_all(self, code: int = CLOSE_GOING_AWAY) -> None:
        """Close every subscription socket: on shutdown clients get 1001 and reconnect elsewhere."""
        if self.connections:
            log.info("closing subscription connections", count=len(self.connections), code=code)
        await asyncio.gather(*(connection.close(code) for connection in list(self.connections)))

    async def get_context(self, request: Any, response: Any) -> GraphQLContext:
        """Per connection: the caller identified from the upgrade request (see ``__call__``)."""
        self.admission.ensure_open()
        identity: Identity | None = request.scope.get("state", {}).get("identity")
        client = request.client.host if request.client else ""
        return make_context(
            self.services,
            identity=identity,
            trace_id=current_trace_id.get() or "",
            client_id=identity.subject if identity is not None else client,
        )
