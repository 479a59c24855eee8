"""The composition root: every long-lived object of the service is built here, from Settings.

Each part is handed what it needs; no part constructs another part's objects or looks them up
at run time. Start-up order and shutdown order are both in ``_lifespan`` and ``_connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from strawberry import Schema

from pcf_api import __version__
from pcf_api.app import GraphQLEndpoints, ServiceApp, create_app
from pcf_api.auth.authorizer import Authorizer, DecisionCache
from pcf_api.auth.identity import (
    Authenticator,
    JwksKeySet,
    KeySource,
    StaticKeys,
    TokenVerifier,
)
from pcf_api.auth.local import LocalBackend
from pcf_api.auth.policy import AuthorizationBackend
from pcf_api.auth.spicedb import SpiceDBBackend
from pcf_api.compat import sqlalchemy as sqlalchemy_compat
from pcf_api.compat import strawberry as strawberry_compat
from pcf_api.compat import uvicorn as uvicorn_compat
from pcf_api.compat.strawberry import graphql_core_schema
from pcf_api.config import ASYMMETRIC_ALGORITHMS, AuthSettings, Settings
from pcf_api.graphql.admission import Admission
from pcf_api.graphql.context import Services, SubscriptionCounter
from pcf_api.graphql.documents import DocumentCache
from pcf_api.graphql.extensions import AdmissionExtension, ErrorFormatExtension
from pcf_api.graphql.feed import ReadFeed
from pcf_api.graphql.graphiql import page as graphiql_page
from pcf_api.graphql.http import GraphQLHTTP
from pcf_api.graphql.limits import QueryLimits
from pcf_api.graphql.metrics import (
    instrument_engine,
    persisted_metrics,
    service_metrics,
    timed_resolver,
    traced_resolver,
    wrap_root_resolvers,
)
from pcf_api.graphql.persisted import (
    DocumentPolicy,
    MemoryDocumentStore,
    RedisDocumentStore,
    load_manifest,
)
from pcf_api.graphql.schema import build_schema
from pcf_api.graphql.websocket import SubscriptionsApp
from pcf_api.health import HealthRegistry
from pcf_api.observability.logging import dropped_lines, pseudonyms, scrubber
from pcf_api.observability.metrics import (
    Metrics,
    MetricsEndpoint,
    dropped_lines_metrics,
    health_metrics,
)
from pcf_api.observability.tracing import Tracing
from pcf_api.ratelimit import RateLimiter
from pcf_api.resilience import DependencyUnavailable, retry_forever
from pcf_api.secretfiles import SecretFiles
from pcf_api.store.database import (
    Database,
    PasswordSource,
    create_database,
    database_password,
    is_sqlite,
    wait_for_database,
)
from pcf_api.store.events import EventBroker, ListeningBroker, create_broker
from pcf_api.store.events.base import describe_error
from pcf_api.store.migrate import is_current, upgrade_to_head
from pcf_api.store.notes import NoteStore
from pcf_api.store.resilient import ResilientNoteStore

log = structlog.stdlib.get_logger(__name__)

SCHEMA_POLL_SECONDS = 5.0


@dataclass
class Notes:
    """The notes API: its GraphQL endpoints and what they run on."""

    database: Database
    services: Services
    authenticator: Authenticator
    admission: Admission
    schema: Schema
    http: GraphQLHTTP
    subscriptions: SubscriptionsApp

    @property
    def ready(self) -> bool:
        """Start-up has finished: GraphQL operations are admitted."""
        return self.admission.is_open

    def endpoints(self, *, introspection: bool) -> GraphQLEndpoints:
        return GraphQLEndpoints(
            http=self.http,
            websocket=self.subscriptions,
            sdl=self.sdl if introspection else None,
        )

    async def sdl(self, _: Request) -> Response:
        """The schema in SDL (development only, with introspection)."""
        return PlainTextResponse(self.schema.as_str())

    async def close(self) -> None:
        """Close what start-up opened, clients before the pool they may still use."""
        services = self.services
        await services.feed.close()
        await services.broker.close()
        await self.authenticator.aclose()
        await services.authorizer.aclose()
        await services.store.close()
        if self.admission.documents is not None:
            await self.admission.documents.aclose()
        await self.database.dispose()


@dataclass
class Service:
    """What the server runs: the application, its health registry and the notes API."""

    app: ServiceApp
    health: HealthRegistry
    notes: Notes | None

    @property
    def ready(self) -> bool:
        return self.notes is None or self.notes.ready

    async def before_close(self) -> None:
        """At the end of the drain, before the listener closes: subscribers get 1001 and
        reconnect to another instance."""
        if self.notes is not None:
            await self.notes.subscriptions.close_all()


def build_service(settings: Settings, *, health: HealthRegistry | None = None) -> Service:
    """Build the whole service; nothing connects until the application's lifespan starts.
    Tests may pass their own health registry."""
    check_libraries()
    health = health or HealthRegistry(
        version=__version__,
        interval=settings.health.check_interval_seconds,
        timeout=settings.health.check_timeout_seconds,
        warn_interval=settings.health.warn_interval_seconds,
    )
    # Every secret, re-read from its file when that changes (watched while the app runs); a
    # new value is scrubbed from the logs before anything can log it.
    secrets = SecretFiles.from_settings(settings, on_new_secret=scrubber.add_secrets)
    metrics = Metrics(version=__version__, environment=settings.environment)
    metrics.add_source(partial(health_metrics, health))
    metrics.add_source(partial(dropped_lines_metrics, dropped_lines))
    hash_key = secrets.get("log.hash_key")
    if hash_key is not None:  # a rotated key: hashed subjects and addresses follow it
        hash_key.subscribe(lambda secret: pseudonyms.set_key(secret.value))
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
    # service is just its side doors. Configuration requires one outside development.
    notes = (
        build_notes(settings, health=health, metrics=metrics, tracing=tracing, secrets=secrets)
        if settings.database.url is not None
        else None
    )
    metrics_endpoint = MetricsEndpoint(
        metrics, username=settings.metrics.username, password=secrets.get("metrics.password")
    )
    app = create_app(
        settings,
        health=health,
        metrics=metrics,
        metrics_endpoint=metrics_endpoint,
        tracing=tracing,
        lifespan=partial(
            _lifespan,
            settings=settings,
            health=health,
            secrets=secrets,
            tracing=tracing,
            notes=notes,
        ),
        graphql=notes.endpoints(introspection=settings.graphql.introspection) if notes else None,
    )
    return Service(app=app, health=health, notes=notes)


def check_libraries() -> None:
    """Each compatibility module's self-check: CompatibilityError names the library."""
    sqlalchemy_compat.self_check()
    strawberry_compat.self_check()
    uvicorn_compat.self_check()


def build_notes(
    settings: Settings,
    *,
    health: HealthRegistry,
    metrics: Metrics,
    tracing: Tracing | None,
    secrets: SecretFiles,
) -> Notes:
    """The store, broker, identity, authorization, rate limits and GraphQL endpoints."""
    database_settings = settings.database
    password = database_password(secrets)  # rotated passwords: new connections use them
    database = create_database(database_settings, password=password)
    store = ResilientNoteStore(
        NoteStore(database),
        cache_size=database_settings.read_cache_size,
        cache_bytes=database_settings.read_cache_bytes,
        write_queue_size=database_settings.write_queue_size,
        write_wait_seconds=database_settings.write_wait_seconds,
    )
    authenticator = create_authenticator(settings, secrets)
    broker = create_event_broker(settings, password)
    authorizer = create_authorizer(settings, database, secrets=secrets)
    services = Services(
        settings=settings,
        store=store,
        broker=broker,
        feed=ReadFeed(
            broker,
            authorizer,
            concurrency=settings.subscriptions.authorization_concurrency,
            queue_size=settings.subscriptions.queue_events,
            queue_bytes=settings.subscriptions.queue_bytes,
        ),
        health=health,
        subscriptions=SubscriptionCounter(),
        authorizer=authorizer,
        rate_limiter=RateLimiter(settings.rate_limit),
        tracing=tracing,
    )

    health.register("database", store.check, critical=True)
    services.authorizer.register_health_checks(health)
    register_redis_checks(services, health)
    if authenticator.fetches_keys:
        # Not critical: a pod without keys still serves what needs none (health, schema)
        # and recovers by itself; readiness shows it as degraded.
        health.register("identity_keys", authenticator.check_keys, critical=False)

    observed = metrics if settings.metrics.enabled else None
    if observed is not None:
        instrument_engine(database, observed)
        observed.add_source(partial(service_metrics, services))
    if tracing is not None:
        tracing.instrument_engine(database)
        for client in (authenticator.http_client, services.authorizer.backend_http_client):
            if client is not None:
                tracing.instrument_client(client)

    graphql = settings.graphql
    limits = QueryLimits(
        max_depth=graphql.max_depth,
        max_complexity=graphql.max_complexity,
        max_aliases=graphql.max_aliases,
        max_tokens=graphql.max_tokens,
        max_bytes=graphql.max_document_bytes,
    )
    documents = build_document_policy(settings)
    if isinstance(documents.store, RedisDocumentStore):
        # Not critical: requests that carry their document still execute; hash-only ones are
        # answered PERSISTED_QUERY_NOT_FOUND and resent with the document.
        health.register("persisted_queries_redis", documents.store.check, critical=False)
    if observed is not None:
        observed.add_source(partial(persisted_metrics, documents))
    admission = Admission(
        authenticator=authenticator,
        rate_limiter=services.rate_limiter,
        limits=limits,
        documents=documents,
    )
    schema = build_schema(
        extensions=[partial(AdmissionExtension, admission=admission), ErrorFormatExtension]
    )
    core_schema = graphql_core_schema(schema)
    if observed is not None and settings.metrics.field_timing:
        wrap_root_resolvers(core_schema, timed_resolver(observed))
    if tracing is not None:
        wrap_root_resolvers(core_schema, traced_resolver(tracing))
    http = GraphQLHTTP(
        admission=admission,
        services=services,
        documents=DocumentCache(
            core_schema,
            limits,
            introspection=graphql.introspection,
            size=graphql.document_cache_size,
            max_bytes=graphql.document_cache_bytes,
        ),
        introspection=graphql.introspection,
        graphiql=graphiql_page(graphql) if graphql.graphiql else None,
        execution_timeout=graphql.execution_timeout_seconds,
        metrics=observed,
        tracing=tracing,
    )
    return Notes(
        database=database,
        services=services,
        authenticator=authenticator,
        admission=admission,
        schema=schema,
        http=http,
        subscriptions=SubscriptionsApp(
            schema,
            admission=admission,
            services=services,
            connection_init_timeout=settings.subscriptions.connection_init_timeout,
            allow_origins=settings.cors.allow_origins,
            allow_origin_regex=settings.cors.allow_origin_regex,
        ),
    )


def build_document_policy(settings: Settings) -> DocumentPolicy:
    """Automatic persisted queries (in process, or in Redis when configured) and the trusted
    documents manifest; ManifestError (start-up refused) when the manifest is unusable."""
    graphql = settings.graphql
    store: MemoryDocumentStore | RedisDocumentStore | None = None
    if graphql.persisted_queries:
        local = MemoryDocumentStore(graphql.persisted_queries_max_bytes)
        redis_url = graphql.persisted_queries_redis_url
        store = (
            RedisDocumentStore.from_url(
                redis_url.get_secret_value(),
                local=local,
                timeout=graphql.persisted_queries_redis_timeout_seconds,
            )
            if redis_url is not None
            else local
        )
    trusted = (
        load_manifest(graphql.trusted_documents) if graphql.trusted_documents is not None else {}
    )
    return DocumentPolicy(
        store=store,
        trusted=trusted,
        only_trusted=graphql.only_trusted_documents,
        max_document_bytes=graphql.max_document_bytes,
    )


@contextlib.asynccontextmanager
async def _lifespan(
    _: Starlette,
    *,
    settings: Settings,
    health: HealthRegistry,
    secrets: SecretFiles,
    tracing: Tracing | None,
    notes: Notes | None,
) -> AsyncIterator[None]:
    """Start-up, then shutdown in the reverse order.

    Start-up never blocks the server: the process listens at once (liveness answers), readiness
    says ``starting`` and /graphql answers 503 until ``_connect`` has finished."""
    secrets.start()
    connecting = None
    if notes is not None:
        connecting = asyncio.create_task(_connect(settings, notes), name="notes-api-start")
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
        if notes is not None:
            await notes.subscriptions.close_all()
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        if notes is not None:
            await notes.close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # exports what is still buffered
        await secrets.stop()
        log.info("application stopped")


def register_redis_checks(services: Services, health: HealthRegistry) -> None:
    """A readiness entry for each Redis the rate limiter and the events broker use. Not
    critical: limits fall back to per-process counts, and without events only subscriptions
    are refused; readiness shows ``degraded`` and names the entry."""
    if services.rate_limiter.storage is not None:
        health.register("rate_limit_redis", services.rate_limiter.check, critical=False)
    broker = services.broker
    if isinstance(broker, ListeningBroker):
        health.register(broker.health_name, broker.check, critical=False)


async def _connect(settings: Settings, notes: Notes) -> None:
    """Connect, retrying the whole sequence with the shared back-off if a step fails. A step
    that cannot reach a dependency is logged as one line naming it; any other failure with its
    traceback (a failing migration needs more than the error's type)."""
    await retry_forever(
        partial(_connect_once, settings, notes),
        initial=settings.database.retry_initial_seconds,
        cap=settings.database.retry_max_seconds,
        log=log,
        retrying="notes API start-up step failed; retrying",
        level=logging.ERROR,
        describe=_startup_failure,
    )


def _startup_failure(error: BaseException) -> dict[str, object]:
    if isinstance(error, DependencyUnavailable):
        return {"dependency": error.dependency, "reason": error.reason}
    return {"exc_info": error}


async def _connect_once(settings: Settings, notes: Notes) -> None:
    """The database answers, its schema is current, the broker and key sources are up; then
    operations are admitted and readiness reflects the database at once."""
    database = settings.database
    services = notes.services
    engine = notes.database.engine
    await wait_for_database(
        engine, initial=database.retry_initial_seconds, cap=database.retry_max_seconds
    )
    if database.auto_migrate or is_sqlite(engine.url):
        await upgrade_to_head(engine)
    while not await is_current(engine):
        log.warning("database schema is behind; waiting for `pcf-api migrate`")
        await asyncio.sleep(SCHEMA_POLL_SECONDS)
    await _start_broker(services.broker)
    await notes.authenticator.start()
    notes.admission.open()
    await services.health.check_all()
    services.health.mark_started()
    log.info("notes API ready", database=engine.dialect.name)


async def _start_broker(broker: EventBroker) -> None:
    try:
        await broker.start()
    except Exception as error:
        if not isinstance(broker, ListeningBroker):
            raise
        raise DependencyUnavailable(broker.health_name, describe_error(error)) from error


def create_event_broker(settings: Settings, password: PasswordSource | None = None) -> EventBroker:
    """The configured broker; ``auto`` is PostgreSQL LISTEN/NOTIFY on PostgreSQL, else memory."""
    backend = settings.events.backend
    database_url = settings.database.url.get_secret_value() if settings.database.url else None
    if backend == "auto":
        backend = "postgres" if database_url and database_url.startswith("postgres") else "memory"
    if backend == "redis":
        if settings.events.redis_url is None:
            raise ValueError("events.backend is redis but events.redis_url is not set")
        return create_broker(
            "redis",
            settings.events.redis_url.get_secret_value(),
            redis_timeout=settings.events.redis_timeout_seconds,
        )
    if backend == "postgres":
        return create_broker("postgres", database_url, password=password)
    return create_broker(backend, None)


def create_verifier(settings: Settings, secrets: SecretFiles | None = None) -> TokenVerifier | None:
    """A verifier for the configured key sources; None when none is configured (then every
    bearer token is refused). Keys: ``auth.jwks_path`` (read now; OSError/ValueError when
    unusable), else ``auth.jwks_url``, else discovery from ``auth.issuer`` when public keys are
    wanted (``discovers_keys``); plus the HS256 secret when set (from ``secrets``, so that a
    rotated one takes effect)."""
    auth = settings.auth
    secrets = secrets or SecretFiles.from_settings(settings)
    secret = secrets.get("auth.hs256_secret")
    if secret is not None and not secret.value:
        secret = None  # empty: no HS256 secret (development; refused elsewhere)
    keys: KeySource | None = None
    if auth.jwks_path is not None:
        keys = StaticKeys.from_file(auth.jwks_path)
    elif auth.jwks_url or discovers_keys(auth, has_secret=secret is not None):
        keys = JwksKeySet(
            jwks_url=auth.jwks_url,
            issuer=auth.issuer,
            timeout=auth.http_timeout_seconds,
            min_refresh_interval=auth.jwks_refresh_min_interval_seconds,
            max_age=auth.jwks_max_age_seconds,
        )
    if keys is None and secret is None:
        return None
    return TokenVerifier(
        algorithms=auth.allowed_algorithms(),
        issuer=auth.issuer,
        audience=auth.audience,
        leeway=auth.leeway_seconds,
        hs256_secret=secret,
        keys=keys,
        cache_bytes=auth.token_cache_bytes,
    )


def discovers_keys(auth: AuthSettings, *, has_secret: bool) -> bool:
    """Whether ``auth.issuer`` is asked for its public keys (OIDC discovery): only when public
    keys are wanted, i.e. without an HS256 secret or with an asymmetric algorithm listed in
    ``auth.algorithms``. With only a secret, the issuer is the ``iss`` every token must carry,
    and nothing is fetched (no discovery, no ``identity_keys`` readiness check)."""
    if auth.issuer is None:
        return False
    listed = set(auth.algorithms or ())
    return not has_secret or bool(listed & ASYMMETRIC_ALGORITHMS)


def create_authenticator(settings: Settings, secrets: SecretFiles | None = None) -> Authenticator:
    """Bearer tokens always; the demo identity only in development (production and staging
    already refuse to start with ``auth.demo_user`` set)."""
    demo_user = settings.auth.demo_user if settings.is_development else None
    return Authenticator(create_verifier(settings, secrets), demo_user=demo_user or None)


def create_authorizer(
    settings: Settings,
    database: Database,
    *,
    clock: Callable[[], float] = time.monotonic,
    secrets: SecretFiles | None = None,
) -> Authorizer:
    """The configured backend behind the decision cache and the outage rule."""
    authz = settings.authz
    backend: AuthorizationBackend
    if authz.backend == "spicedb":
        key = (secrets or SecretFiles.from_settings(settings)).get("authz.spicedb_preshared_key")
        if authz.spicedb_endpoint is None or key is None:
            raise ValueError("authz.backend = spicedb needs an endpoint and a pre-shared key")
        backend = SpiceDBBackend(
            authz.spicedb_endpoint,
            key,
            timeout=authz.spicedb_timeout_seconds,
            fully_consistent=authz.spicedb_fully_consistent,
            failure_threshold=authz.breaker_failure_threshold,
            reset_timeout=authz.breaker_reset_seconds,
            clock=clock,
        )
    else:
        backend = LocalBackend(database)
    cache = DecisionCache(
        ttl=authz.cache_ttl_seconds,
        maxsize=authz.cache_size,
        max_bytes=authz.cache_bytes,
        stale_window=authz.stale_window_seconds,
        clock=clock,
    )
    return Authorizer(backend, cache=cache, stale_window=authz.stale_window_seconds, clock=clock)
