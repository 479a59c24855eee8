"""GraphQL over WebSocket: Strawberry's protocols (graphql-transport-ws and legacy graphql-ws).

The upgrade is checked first: a browser ``Origin`` the CORS settings do not allow is refused
before the handshake (HTTP 403), and so is a bad ``Authorization`` header. The caller is then
identified at the upgrade (header, or the demo user in development) or, as browsers must,
by the token in the ``connection_init`` payload, through the same identity step as HTTP; until
``connection_init`` is authenticated nothing can be subscribed. A missing or bad token closes the
socket with 4403 (graphql-transport-ws; legacy graphql-ws: ``connection_error``, then close), no
``connection_init`` in time with 4408. Each operation then passes the rest of the admission
pipeline (``AdmissionExtension``). On shutdown every socket is closed with 1001 (going away),
so clients reconnect to another pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Collection
from datetime import timedelta
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry import Schema
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from pcf_api.auth.identity import AuthenticationError, Identity
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.admission import Admission, connection_authorization
from pcf_api.graphql.context import GraphQLContext, Services, make_context
from pcf_api.graphql.origins import origin_allowed
from pcf_api.observability.tracecontext import current_trace_id

log = structlog.stdlib.get_logger(__name__)

CLOSE_GOING_AWAY = 1001
WS_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INIT_TIMEOUT = 4408
DEFAULT_CONNECTION_INIT_TIMEOUT = 10.0
_CONNECTION = "pcf_api.connection"


class _Connection:
    """One WebSocket, closable from outside the protocol handler that owns it."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closing = asyncio.Event()
        self.initialised = asyncio.Event()
        """Set when the client's ``connection_init`` arrives (``on_ws_connect``)."""
        self.subprotocol: str | None = None
        """The subprotocol the handshake accepted, once it has."""

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
            if message["type"] == "websocket.accept":
                self.subprotocol = message.get("subprotocol")
            await self._send(message)

    async def close(self, code: int, reason: str = "server shutdown") -> None:
        """Send the close frame, then end the handler's receive loop; later sends are dropped."""
        if self._closing.is_set():
            return
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        self._closing.set()


@dataclasses.dataclass
class SocketContext(GraphQLContext):
    """A socket's context: ``connection_params`` is the ``connection_init`` payload (set by
    Strawberry's handlers); ``identity`` and ``client_id`` are settled when it is accepted."""

    connection_params: dict[str, Any] | None = None
    connection: _Connection | None = None


class SubscriptionsApp(GraphQL[GraphQLContext, None]):
    """Strawberry's WebSocket protocols with our admission, origin rule and context."""

    def __init__(
        self,
        schema: Schema,
        *,
        admission: Admission,
        services: Services,
        connection_init_timeout: float = DEFAULT_CONNECTION_INIT_TIMEOUT,
        allow_origins: Collection[str] = (),
        allow_origin_regex: str | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=connection_init_timeout),
        )
        self.admission = admission
        self.services = services
        self.connection_init_timeout = connection_init_timeout
        self.allow_origins = frozenset(allow_origins)
        self.allow_origin_regex = allow_origin_regex
        self.connections: set[_Connection] = set()

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        """Strawberry's own origin hook applies the same rule as ``__call__`` (which refuses
        first, with our log line), so it never refuses an origin the settings allow."""
        return origin_allowed(origin, self.allow_origins, self.allow_origin_regex)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # Refused before the handshake completes, the client gets HTTP 403 and no socket, and
        # holds no subscription slot or budget.
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(
            origin, self.allow_origins, self.allow_origin_regex
        ):
            # A browser page on another site (cross-site WebSocket hijacking); clients that
            # send no Origin are not browsers and pass.
            log.info(
                "websocket refused",
                code=ErrorCode.FORBIDDEN.value,
                reason="The origin is not allowed.",
                origin=origin[:200],
            )
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        try:
            # The upgrade's header (or the demo user); without either, the identity is decided
            # by the connection_init payload (``on_ws_connect``). A bad header is refused here.
            identity = await self.admission.identify(
                headers.get("authorization"), headers.get("x-demo-user")
            )
        except AppError as error:
            log.info("websocket refused", code=error.code.value, reason=error.message)
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        connection = _Connection(receive, send)
        state = scope.setdefault("state", {})
        state["identity"] = identity
        state[_CONNECTION] = connection
        self.connections.add(connection)
        deadline = asyncio.create_task(self._connection_init_deadline(connection))
        try:
            await super().__call__(scope, connection.receive, connection.send)
        finally:
            deadline.cancel()
            self.connections.discard(connection)

    async def _connection_init_deadline(self, connection: _Connection) -> None:
        """No ``connection_init`` in time closes with 4408: graphql-transport-ws has Strawberry's
        own timer (``connection_init_wait_timeout``); legacy graphql-ws has none, so here."""
        try:
            await asyncio.wait_for(connection.initialised.wait(), self.connection_init_timeout)
        except TimeoutError:
            log.info(
                "websocket closed",
                code=CLOSE_INIT_TIMEOUT,
                reason="No connection_init within the timeout.",
            )
            if connection.subprotocol == GRAPHQL_WS_PROTOCOL:
                await connection.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        """At ``connection_init``: a token in its payload is identified as an HTTP request's
        header would be, and becomes the socket's caller; else the upgrade's caller stands.
        Neither, or a bad token, rejects the connection (4403 / ``connection_error``)."""
        if not isinstance(context, SocketContext):  # pragma: no cover - built by get_context
            raise ConnectionRejectionError({"message": "Authentication is required."})
        if context.connection is not None:
            context.connection.initialised.set()
        try:
            authorization = connection_authorization(context.connection_params)
            identity = (
                await self.admission.identify(authorization, None)
                if authorization is not None
                else context.identity
            )
            if identity is None:
                raise AuthenticationError(None, "Authentication is required.")
        except AppError as error:
            log.info(
                "websocket refused",
                code=error.code.value,
                reason=error.message,
                at="connection_init",
            )
            if error.code is not ErrorCode.UNAUTHORIZED and context.connection is not None:
                # Not the client's fault (signing keys unavailable): 1013, try again later.
                await context.connection.close(CLOSE_TRY_AGAIN_LATER, error.message)
            raise ConnectionRejectionError(
                {"message": error.message, "extensions": {"code": error.code.value}}
            ) from None
        context.identity = identity
        context.client_id = identity.subject
        return UnsetType()  # the singleton UNSET: acknowledge without a payload

    async def close_all(self, code: int = CLOSE_GOING_AWAY) -> None:
        """Close every subscription socket: on shutdown clients get 1001 and reconnect elsewhere."""
        if self.connections:
            log.info("closing subscription connections", count=len(self.connections), code=code)
        await asyncio.gather(*(connection.close(code) for connection in list(self.connections)))

    async def get_context(self, request: Any, response: Any) -> GraphQLContext:
        """Per connection: the caller identified from the upgrade request (see ``__call__``),
        replaced by the ``connection_init`` payload's (see ``on_ws_connect``)."""
        self.admission.ensure_open()
        state = request.scope.get("state", {})
        identity: Identity | None = state.get("identity")
        client = request.client.host if request.client else ""
        context = make_context(
            self.services,
            identity=identity,
            trace_id=current_trace_id.get() or "",
            client_id=identity.subject if identity is not None else client,
        )
        fields = {field.name: getattr(context, field.name) for field in dataclasses.fields(context)}
        return SocketContext(**fields, connection=state.get(_CONNECTION))
