"""The ASGI application: routes, middleware order and lifespan, from parts built elsewhere.

Everything long-lived is built by the composition root (``composition.py``) and handed in;
this module only decides which path goes where and in which order middleware runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from pcf_api import __version__
from pcf_api.config import Settings
from pcf_api.errors import code_for_status, default_message
from pcf_api.graphql.graphiql import ASSETS_PATH as GRAPHIQL_ASSETS_PATH
from pcf_api.graphql.http import GRAPHQL_PATH
from pcf_api.health import HealthRegistry, Status
from pcf_api.middleware import (
    BodyLimitMiddleware,
    ErrorBoundaryMiddleware,
    FaultInjectionMiddleware,
    RequestContextMiddleware,
    RequestTimeoutMiddleware,
    error_response,
)
from pcf_api.observability.metrics import METRICS_PATH, Metrics
from pcf_api.observability.tracing import Tracing

_NO_CACHE = {"Cache-Control": "no-cache, no-store"}

CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_REQUEST_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "traceparent",
    "tracestate",
    # Apollo Client's client awareness (``name``/``version`` options) sends these.
    "apollographql-client-name",
    "apollographql-client-version",
)
CORS_EXPOSED_HEADERS = ("X-Trace-Id", "X-Query-Complexity", "Retry-After")


async def liveness(_: Request) -> Response:
    """Liveness: the process answers. It never touches a dependency, so a database outage
    cannot make Kubernetes restart every pod at once."""
    return PlainTextResponse("OK", headers=_NO_CACHE)


def readiness(health: HealthRegistry) -> Callable[[Request], Awaitable[Response]]:
    """Readiness: the health registry's report, 503 unless healthy or degraded."""

    async def endpoint(_: Request) -> Response:
        report = health.report()
        status = Status(report["status"]).http_status
        return Response(
            orjson.dumps(report),
            status_code=status,
            media_type="application/json",
            headers=_NO_CACHE,
        )

    return endpoint


async def version(_: Request) -> Response:
    return Response(
        orjson.dumps({"name": "pcf-api", "version": __version__}), media_type="application/json"
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    """Router errors (404, 405) in the service's error format."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    code = code_for_status(status)
    return error_response(code, default_message(code), path=request.url.path, headers=headers)


class ServiceApp(Starlette):
    """Starlette, plus a direct lane for GraphQL over HTTP.

    ``POST /graphql`` is nearly all of the traffic. It goes through the same middleware as every
    other request, but then straight to the GraphQL handler, past Starlette's own exception
    layers and router, which do nothing for it: the handler answers every outcome itself.
    Measured on the notes query, that is ≈ 5 % of a request's CPU (docs/benchmarks.md).
    Everything else, the GraphQL WebSocket included, takes the normal route.
    """

    graphql_lane: ASGIApp | None = None
    metrics_port: int | None = None
    """With ``metrics.port`` set, the server listens there too; that port serves /metrics and
    nothing else, and the main port does not serve /metrics (a NetworkPolicy can then open
    the metrics port to Prometheus alone)."""
    metrics_lane: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.metrics_port is not None:
            server = scope.get("server")
            if server is not None and server[1] == self.metrics_port:
                await self._metrics_port(scope, receive, send)
                return
        lane = self.graphql_lane
        if lane is not None and scope["type"] == "http" and scope["path"] == GRAPHQL_PATH:
            scope["app"] = self
            await lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _metrics_port(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == METRICS_PATH and self.metrics_lane is not None:
            await self.metrics_lane(scope, receive, send)
            return
        code = code_for_status(404)
        response = error_response(code, default_message(code), path=scope["path"])
        await response(scope, receive, send)


def _wrapped(app: ASGIApp, middleware: list[Middleware]) -> ASGIApp:
    """``app`` inside ``middleware``, first outermost, as Starlette assembles its own stack."""
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


@dataclass(frozen=True)
class GraphQLEndpoints:
    """What the GraphQL layer serves: HTTP (routed past Starlette's router, see ``ServiceApp``),
    the WebSocket, and the SDL (None when introspection is off)."""

    http: ASGIApp
    websocket: ASGIApp
    sdl: Callable[[Request], Awaitable[Response]] | None


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Starlette's CORS middleware, when some browser origin is allowed (none by default outside
    development, and then it costs nothing per request).

    It sits inside the request context (a preflight still gets a trace id, an access line and
    metrics) and outside the error boundary, so 401, 429 and 503 answers carry the CORS headers
    a browser needs to let the app read them. A preflight is answered here, before admission:
    it needs no identity and spends no rate budget.
    """
    cors = settings.cors
    if not cors.allow_origins and cors.allow_origin_regex is None:
        return []
    headers = list(CORS_REQUEST_HEADERS)
    if settings.auth.demo_user:  # the development identity header
        headers.append("x-demo-user")
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_origin_regex=cors.allow_origin_regex,
            allow_credentials=cors.allow_credentials,
            allow_methods=CORS_METHODS,
            allow_headers=headers,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=cors.max_age,
        )
    ]


def create_app(
    settings: Settings,
    *,
    health: HealthRegistry,
    metrics: Metrics,
    metrics_endpoint: ASGIApp,
    tracing: Tracing | None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
    graphql: GraphQLEndpoints | None,
) -> ServiceApp:
    """The application: side doors (health, version, metrics), GraphQL when there is a database,
    every route behind the same middleware."""
    metrics_settings = settings.metrics
    middleware = [
        Middleware(
            RequestContextMiddleware,
            metrics=metrics if metrics_settings.enabled else None,
            tracing=tracing,
        ),
        *cors_middleware(settings),
        Middleware(ErrorBoundaryMiddleware),
        Middleware(
            RequestTimeoutMiddleware, timeout_seconds=settings.server.request_timeout_seconds
        ),
        Middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes),
    ]
    if settings.testing.delay_seconds > 0:
        middleware.append(
            Middleware(
                FaultInjectionMiddleware,
                delay_seconds=settings.testing.delay_seconds,
                paths=settings.testing.delay_paths,
            )
        )
    routes: list[BaseRoute] = [
        Route("/health", liveness, methods=["GET", "HEAD"]),
        Route("/health/ready", readiness(health), methods=["GET", "HEAD"]),
        Route("/version", version, methods=["GET"]),
    ]
    if graphql is not None:
        routes.append(WebSocketRoute(GRAPHQL_PATH, graphql.websocket))
        if graphql.sdl is not None:
            routes.append(Route("/schema", graphql.sdl, methods=["GET"]))
        assets = settings.graphql.graphiql_assets_dir
        if settings.graphql.graphiql and assets is not None:
            routes.append(Mount(GRAPHIQL_ASSETS_PATH, StaticFiles(directory=assets)))
    if metrics_settings.enabled and metrics_settings.port is None:
        routes.append(Route(METRICS_PATH, metrics_endpoint, methods=["GET"]))
    app = ServiceApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception},
    )
    if graphql is not None:
        app.graphql_lane = _wrapped(graphql.http, middleware)
    if metrics_settings.enabled and metrics_settings.port is not None:
        app.metrics_port = metrics_settings.port
        app.metrics_lane = _wrapped(metrics_endpoint, middleware)
    return app
