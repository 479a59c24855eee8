"""The ASGI application: routes, middleware order and lifespan, assembled from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pcf_api import __version__
from pcf_api.config import Settings
from pcf_api.errors import code_for_status, default_message
from pcf_api.graphql.api import GRAPHQL_PATH, NotesAPI
from pcf_api.health import HealthRegistry, Status
from pcf_api.middleware import (
    BodyLimitMiddleware,
    ErrorBoundaryMiddleware,
    FaultInjectionMiddleware,
    RequestContextMiddleware,
    RequestTimeoutMiddleware,
    error_response,
)
from pcf_api.observability.logging import get_logger
from pcf_api.observability.metrics import METRICS_PATH, Metrics, MetricsEndpoint, health_metrics
from pcf_api.observability.tracing import Tracing
from pcf_api.secretfiles import SecretFiles

log = get_logger(__name__)

_NO_CACHE = {"Cache-Control": "no-cache, no-store"}


async def liveness(_: Request) -> Response:
    """Liveness: the process answers. It never touches a dependency, so a database outage
    cannot make Kubernetes restart every pod at once."""
    return PlainTextResponse("OK", headers=_NO_CACHE)


async def readiness(request: Request) -> Response:
    health: HealthRegistry = request.app.state.health
    report = health.report()
    status = Status(report["status"]).http_status
    return Response(
        orjson.dumps(report), status_code=status, media_type="application/json", headers=_NO_CACHE
    )


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


def create_app(settings: Settings, *, health: HealthRegistry | None = None) -> Starlette:
    """Build the application. Its health registry is ``app.state.health`` (the server flips
    readiness there on signals); tests may pass their own."""
    health = health or HealthRegistry(
        version=__version__,
        interval=settings.health.check_interval_seconds,
        timeout=settings.health.check_timeout_seconds,
        warn_interval=settings.health.warn_interval_seconds,
    )

    # Every secret, re-read from its file when that changes (watched while the app runs).
    secrets = SecretFiles.from_settings(settings)
    metrics = Metrics(version=__version__, environment=settings.environment)
    metrics.add_source(partial(health_metrics, health))
    tracing = (
        Tracing(
            settings.tracing,
            version=__version__,
            environment=settings.environment,
            headers=secrets.get("tracing.headers"),
        )
        if settings.tracing.enabled
        else None
    )

    # The notes API needs a database; without one configured (unit tests of the core) the
    # service is just its health endpoints. Configuration requires one outside development.
    notes_api = (
        NotesAPI(settings, health, metrics, tracing, secrets)
        if settings.database.url is not None
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        secrets.start()
        if notes_api is not None:
            await notes_api.start()
        else:
            health.mark_started()
        checks = asyncio.create_task(health.run(), name="health-checks")
        log.info("application started", environment=settings.environment, version=__version__)
        try:
            yield
        finally:
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks
            await health.close()  # before the clients the checks use are closed
            if notes_api is not None:
                await notes_api.stop()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # exports what is still buffered
            await secrets.stop()
            log.info("application stopped")

    metrics_settings = settings.metrics
    metrics_endpoint = MetricsEndpoint(
        metrics, username=metrics_settings.username, password=secrets.get("metrics.password")
    )
    middleware = [
        Middleware(
            RequestContextMiddleware,
            metrics=metrics if metrics_settings.enabled else None,
            tracing=tracing,
        ),
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
    routes = [
        Route("/health", liveness, methods=["GET", "HEAD"]),
        Route("/health/ready", readiness, methods=["GET", "HEAD"]),
        Route("/version", version, methods=["GET"]),
        *(notes_api.routes() if notes_api is not None else []),
    ]
    if metrics_settings.enabled and metrics_settings.port is None:
        routes.append(Route(METRICS_PATH, metrics_endpoint, methods=["GET"]))
    app = ServiceApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception},
    )
    app.state.health = health
    app.state.secrets = secrets
    app.state.notes_api = notes_api
    app.state.metrics = metrics
    if notes_api is not None:
        app.graphql_lane = _wrapped(notes_api.http, middleware)
    if metrics_settings.enabled and metrics_settings.port is not None:
        app.metrics_port = metrics_settings.port
        app.metrics_lane = _wrapped(metrics_endpoint, middleware)
    return app
