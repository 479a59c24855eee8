"""The notes API's metrics: its state read at scrape time, SQL statements timed as they run,
and (opt-in) top-level resolvers timed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from inspect import isawaitable
from typing import Any

from graphql import GraphQLResolveInfo, GraphQLSchema
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pcf_api.graphql.context import Services
from pcf_api.graphql.persisted import DocumentPolicy
from pcf_api.observability.metrics import Metrics
from pcf_api.observability.tracing import Tracing, recording, statement_kind
from pcf_api.ratelimit import Budget
from pcf_api.store.database import Database
from pcf_api.store.statements import StatementEnd, observe_statements


def service_metrics(services: Services) -> Iterable[Metric]:
    """Subscriptions, the connection pool, the write queue, the authorization cache and the
    rate limiter, as they are at this scrape."""
    pool: Any = services.store.database.pool
    gate = services.store.gate
    authorizer = services.authorizer
    yield _gauge(
        "graphql_active_subscriptions",
        "Subscriptions open on this instance.",
        services.subscriptions.total,
    )
    yield _gauge("database_connection_pool_size", "Connections the pool keeps.", pool.size())
    yield _gauge(
        "database_connection_pool_checked_out",
        "Connections in use by requests right now.",
        pool.checkedout(),
    )
    yield _gauge(
        "database_write_queue_depth", "Writes waiting for the database to come back.", gate.waiting
    )
    yield _gauge(
        "database_write_queue_capacity",
        "Writes that may wait before new ones are refused.",
        gate.capacity,
    )
    yield _counter(
        "authorization_cache_hits",
        "Authorization decisions answered from the cache.",
        authorizer.cache_hits,
    )
    yield _counter(
        "authorization_cache_misses",
        "Authorization decisions the backend was asked for.",
        authorizer.cache_misses,
    )
    rejections = CounterMetricFamily(
        "rate_limit_rejections", "Requests refused with 429, by budget.", labels=["budget"]
    )
    for budget in Budget:
        rejections.add_metric([budget.value], services.rate_limiter.rejections[budget])
    yield rejections
    yield _gauge(
        "rate_limit_storage_fallback",
        "1 while the shared rate-limit storage fails and budgets are counted per process.",
        int(services.rate_limiter.fallback_active),
    )
    yield _counter(
        "rate_limit_fallback_decisions",
        "Budget decisions made per process because the shared storage failed.",
        services.rate_limiter.fallback_decisions,
    )


def persisted_metrics(policy: DocumentPolicy) -> Iterable[Metric]:
    """Persisted queries (APQ) and trusted documents, as counted by the document policy."""
    persisted = CounterMetricFamily(
        "graphql_persisted_queries",
        "Automatic persisted queries, by outcome: hit (hash known), miss (answered "
        "PERSISTED_QUERY_NOT_FOUND), registered (hash and document stored).",
        labels=["outcome"],
    )
    persisted.add_metric(["hit"], policy.hits)
    persisted.add_metric(["miss"], policy.misses)
    persisted.add_metric(["registered"], policy.registrations)
    yield persisted
    trusted = CounterMetricFamily(
        "graphql_trusted_documents",
        "Trusted documents, by outcome: hit (named or sent, in the manifest), refused "
        "(DOCUMENT_NOT_TRUSTED).",
        labels=["outcome"],
    )
    trusted.add_metric(["hit"], policy.trusted_hits)
    trusted.add_metric(["refused"], policy.refusals)
    yield trusted
    if policy.store is not None:
        yield _gauge(
            "graphql_persisted_queries_store_bytes",
            "Bytes of document text in this instance's persisted-query store.",
            policy.store.size_bytes,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def instrument_engine(database: Database, metrics: Metrics) -> None:
    """Count and time every SQL statement, labelled by its kind (select, insert, …, other)."""

    def timed(statement: str) -> StatementEnd:
        kind = statement_kind(statement)
        started = time.perf_counter()

        def end(_: BaseException | None) -> None:
            metrics.observe_query(kind, time.perf_counter() - started)

        return end

    for engine in database.statement_engines:
        observe_statements(engine, timed)


Resolver = Callable[..., Any]


def wrap_root_resolvers(schema: GraphQLSchema, wrap: Callable[[str, Resolver], Resolver]) -> None:
    """Replace each top-level resolver (Query.*, Mutation.*) by ``wrap(label, resolver)``.

    Why not graphql-core middleware: middleware wraps every field of every object, ~50 calls
    for a page of notes, and measurably costs on each request (docs/benchmarks.md); the fields
    worth timing or tracing are the top-level ones, which are wrapped once, here."""
    for root in (schema.query_type, schema.mutation_type):
        if root is None:
            continue
        for name, field in root.fields.items():
            if field.resolve is not None:
                field.resolve = wrap(f"{root.name}.{name}", field.resolve)


def timed_resolver(metrics: Metrics) -> Callable[[str, Resolver], Resolver]:
    """Top-level resolvers observed in graphql_field_resolution_duration_seconds (opt-in:
    ``metrics.field_timing``)."""

    def wrap(field: str, resolve: Resolver) -> Resolver:
        observe = metrics.field_duration.labels(field).observe

        def resolver(root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
            started = time.perf_counter()
            result = resolve(root, info, **args)
            if isawaitable(result):
                return _observed(result, observe, started)
            observe(time.perf_counter() - started)
            return result

        return resolver

    return wrap


async def _observed(
    result: Awaitable[Any], observe: Callable[[float], None], started: float
) -> Any:
    try:
        return await result
    finally:
        observe(time.perf_counter() - started)


def traced_resolver(tracing: Tracing) -> Callable[[str, Resolver], Resolver]:
    """A span per top-level resolver (``graphql.resolve Query.notes``), the parent of the
    authorization checks and SQL statements it causes; nothing when the request is unsampled."""

    def wrap(field: str, resolve: Resolver) -> Resolver:
        name = f"graphql.resolve {field}"

        def resolver(root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
            if not recording():
                return resolve(root, info, **args)
            return spanned(root, info, args)

        async def spanned(root: Any, info: GraphQLResolveInfo[Any], args: dict[str, Any]) -> Any:
            with tracing.span(name, **{"graphql.field.path": field}):
                result = resolve(root, info, **args)
                return await result if isawaitable(result) else result

        return resolver

    return wrap
