"""The notes API as one component: its routes, and the start-up and shutdown of what it needs.

Start-up never blocks the server: the process listens at once (liveness answers), readiness
says ``starting`` and /graphql answers 503 until the database answers, the schema is current
and the events broker is connected. The database is retried forever with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from pcf_api.auth.factory import create_authenticator, create_authorizer
from pcf_api.auth.identity import AuthenticationError, Identity
from pcf_api.config import Settings
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.context import GraphQLContext, Services, SubscriptionCounter, make_context
from pcf_api.graphql.documents import DocumentCache
from pcf_api.graphql.extensions import (
    ErrorFormatExtension,
    QueryLimitsExtension,
    RateLimitExtension,
)
from pcf_api.graphql.http import GraphQLHTTP
from pcf_api.graphql.limits import QueryLimits
from pcf_api.graphql.metrics import (
    instrument_engine,
    service_metrics,
    timed_resolver,
    traced_resolver,
    wrap_root_resolvers,
)
from pcf_api.graphql.schema import build_schema
from pcf_api.health import HealthRegistry
from pcf_api.observability.logging import get_logger
from pcf_api.observability.metrics import Metrics
from pcf_api.observability.tracecontext import current_trace_id
from pcf_api.observability.tracing import Tracing
from pcf_api.ratelimit import RateLimiter
from pcf_api.secretfiles import SecretFiles
from pcf_api.store.database import (
    PasswordSource,
    create_database,
    database_password,
    is_sqlite,
    wait_for_database,
)
from pcf_api.store.events import EventBroker, create_broker
from pcf_api.store.migrate import is_current, upgrade_to_head
from pcf_api.store.notes import NoteStore
from pcf_api.store.resilient import ResilientNoteStore

log = get_logger(__name__)

SCHEMA_POLL_SECONDS = 5.0
CLOSE_GOING_AWAY = 1001
WS_POLICY_VIOLATION = 1008
GRAPHQL_PATH = "/graphql"


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
    """Strawberry's WebSocket protocols (graphql-transport-ws and graphql-ws) with our context."""

    def __init__(self, api: NotesAPI, **kwargs: Any) -> None:
        super().__init__(api.schema, **kwargs)
        self.api = api
        self.connections: set[_Connection] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        services = self.api.services
        if services is not None:
            try:
                identity = await _websocket_identity(services, scope)
            except AppError as error:
                # Refused before the handshake completes: the client gets HTTP 403 and no
                # socket, and holds no subscription slot or budget.
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
        services = self.api.services
        if services is None or not self.api.ready:
            raise AppError(ErrorCode.SERVICE_UNAVAILABLE, "The service is starting.")
        identity: Identity | None = request.scope.get("state", {}).get("identity")
        client = request.client.host if request.client else ""
        return make_context(
            services,
            identity=identity,
            trace_id=current_trace_id.get() or "",
            client_id=identity.subject if identity is not None else client,
        )


async def _websocket_identity(services: Services, scope: Scope) -> Identity:
    """The caller of a WebSocket: the upgrade request's ``Authorization`` header (or, in
    development, ``X-Demo-User`` / the demo user). Browsers cannot set headers on a WebSocket,
    so browser clients authenticate through a same-origin proxy that adds the header.
    A socket carries subscriptions and operations that all need an identity: none is refused."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization is None and services.authenticator.demo_user is None:
        raise AuthenticationError(None, "Authentication is required.")
    return await services.authenticator.authenticate(authorization, headers.get("x-demo-user"))


def _broker_for(settings: Settings, password: PasswordSource | None = None) -> EventBroker:
    backend = settings.events.backend
    database_url = settings.database.url.get_secret_value() if settings.database.url else None
    if backend == "auto":
        backend = "postgres" if database_url and database_url.startswith("postgres") else "memory"
    if backend == "redis":
        if settings.events.redis_url is None:
            raise ValueError("events.backend is redis but events.redis_url is not set")
        return create_broker("redis", settings.events.redis_url.get_secret_value())
    if backend == "postgres":
        return create_broker("postgres", database_url, password=password)
    return create_broker(backend, None)


class NotesAPI:
    def __init__(
        self,
        settings: Settings,
        health: HealthRegistry,
        metrics: Metrics,
        tracing: Tracing | None = None,
        secrets: SecretFiles | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets or SecretFiles.from_settings(settings)
        self.health = health
        self.metrics = metrics if settings.metrics.enabled else None
        self.tracing = tracing
        graphql = settings.graphql
        self.limits = QueryLimits(
            max_depth=graphql.max_depth,
            max_complexity=graphql.max_complexity,
            max_aliases=graphql.max_aliases,
            max_tokens=graphql.max_tokens,
            max_bytes=graphql.max_document_bytes,
        )
        self.schema = build_schema(
            extensions=[
                partial(QueryLimitsExtension, limits=self.limits),
                RateLimitExtension,
                ErrorFormatExtension,
            ]
        )
        if self.metrics is not None and settings.metrics.field_timing:
            wrap_root_resolvers(self.schema._schema, timed_resolver(self.metrics))
        if tracing is not None:
            wrap_root_resolvers(self.schema._schema, traced_resolver(tracing))
        self.http = GraphQLHTTP(
            limits=self.limits,
            introspection=graphql.introspection,
            graphiql=graphql.graphiql,
            cache_size=graphql.document_cache_size,
            execution_timeout=graphql.execution_timeout_seconds,
            metrics=self.metrics,
            tracing=tracing,
        )
        self.subscriptions = SubscriptionsApp(
            self,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self.services: Services | None = None
        self.ready = False
        self._starting: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        """The WebSocket endpoint and the SDL. GraphQL over HTTP, ``self.http``, is not routed:
        the application calls it directly for every HTTP request to ``GRAPHQL_PATH``."""
        routes: list[BaseRoute] = [WebSocketRoute(GRAPHQL_PATH, self.subscriptions)]
        if self.settings.graphql.introspection:
            routes.append(Route("/schema", self.sdl, methods=["GET"]))
        return routes

    async def sdl(self, _: Request) -> Response:
        """The schema in SDL (development only, with introspection)."""
        return PlainTextResponse(self.schema.as_str())

    async def start(self) -> None:
        """Build the services and begin connecting in the background."""
        database = self.settings.database
        password = database_password(self.secrets)  # rotated passwords: new connections use them
        notes_database = create_database(database, password=password)
        store = ResilientNoteStore(
            NoteStore(notes_database),
            cache_size=database.read_cache_size,
            write_queue_size=database.write_queue_size,
            write_wait_seconds=database.write_wait_seconds,
        )
        self.services = Services(
            settings=self.settings,
            store=store,
            broker=_broker_for(self.settings, password),
            health=self.health,
            subscriptions=SubscriptionCounter(),
            authenticator=create_authenticator(self.settings, self.secrets),
            authorizer=create_authorizer(self.settings, notes_database, secrets=self.secrets),
            rate_limiter=RateLimiter(self.settings.rate_limit),
            tracing=self.tracing,
        )
        self.health.register("database", store.check, critical=True)
        self.services.authorizer.register_health_checks(self.health)
        if self.services.authenticator.fetches_keys:
            # Not critical: a pod without keys still serves what needs none (health, schema)
            # and recovers by itself; readiness shows it as degraded.
            self.health.register(
                "identity_keys", self.services.authenticator.check_keys, critical=False
            )
        if self.metrics is not None:
            instrument_engine(notes_database, self.metrics)
            self.metrics.add_source(partial(service_metrics, self.services))
        if self.tracing is not None:
            self.tracing.instrument_engine(notes_database)
            for client in (
                self.services.authenticator.http_client,
                self.services.authorizer.backend_http_client,
            ):
                if client is not None:
                    self.tracing.instrument_client(client)
        self._starting = asyncio.create_task(self._connect(), name="notes-api-start")

    async def _connect(self) -> None:
        """Connect, retrying the whole sequence if a step fails (logged), until ready."""
        database = self.settings.database
        while True:
            try:
                await self._connect_once()
            except Exception:
                log.exception("notes API start-up step failed; retrying")
                await asyncio.sleep(database.retry_initial_seconds)
            else:
                return

    async def _connect_once(self) -> None:
        services = self.services
        if services is None:
            return
        engine = services.store.database.engine
        database = self.settings.database
        await wait_for_database(
            engine, initial=database.retry_initial_seconds, cap=database.retry_max_seconds
        )
        if database.auto_migrate or is_sqlite(engine.url):
            await upgrade_to_head(engine)
        while not await is_current(engine):
            log.warning("database schema is behind; waiting for `pcf-api migrate`")
            await asyncio.sleep(SCHEMA_POLL_SECONDS)
        await services.broker.start()
        await services.authenticator.start()
        self.http.attach(
            services,
            DocumentCache(
                self.schema._schema,
                self.limits,
                introspection=self.settings.graphql.introspection,
                size=self.settings.graphql.document_cache_size,
            ),
        )
        self.ready = True
        await self.health.check_all()  # readiness reflects the database now, not in one interval
        self.health.mark_started()
        log.info("notes API ready", database=engine.dialect.name)

    async def close_subscriptions(self) -> None:
        await self.subscriptions.close_all()

    async def stop(self) -> None:
        await self.subscriptions.close_all()
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self.services is not None:
            await self.services.broker.close()
            await self.services.authenticator.aclose()
            await self.services.authorizer.aclose()
            await self.services.store.close()
            await self.services.store.database.dispose()
