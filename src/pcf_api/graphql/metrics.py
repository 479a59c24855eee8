"""The notes API's metrics: its state read at scrape time, SQL statements timed as they run,
and (opt-in) top-level resolvers timed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable
from inspect import isawaitable
from typing import Any

from graphql import GraphQLResolveInfo
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from pcf_api.graphql.context import Services
from pcf_api.observability.metrics import Metrics
from pcf_api.observability.tracing import Tracing, recording
from pcf_api.ratelimit import Budget

_STATEMENT_KINDS = ("select", "insert", "update", "delete")


def service_metrics(services: Services) -> Iterable[Metric]:
    """Subscriptions, the connection pool, the write queue, the authorization cache and the
    rate limiter, as they are at this scrape."""
    pool: Any = services.store.engine.pool
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


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def instrument_engine(engine: AsyncEngine, metrics: Metrics) -> None:
    """Count and time every SQL statement, labelled by its kind (select, insert, …, other)."""

    def before(*args: Any) -> None:
        context = args[4]  # (connection, cursor, statement, parameters, context, executemany)
        context._pcf_started = time.perf_counter()

    def after(*args: Any) -> None:
        statement, context = args[2], args[4]
        started = getattr(context, "_pcf_started", None)
        if started is not None:
            metrics.observe_query(_statement_kind(statement), time.perf_counter() - started)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)


def _statement_kind(statement: str) -> str:
    head = statement.lstrip()[:6].lower()
    return head if head in _STATEMENT_KINDS else "other"


class FieldTimer:
    """graphql-core middleware timing the top-level fields (Query.notes, Mutation.createNote…).

    Opt-in (``metrics.field_timing``): wrapping resolvers costs time on every field, so only
    root fields are observed, and only when asked for."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def resolve(self, next_: Any, root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        if info.path.prev is not None:
            return next_(root, info, **args)
        field = f"{info.parent_type.name}.{info.field_name}"
        started = time.perf_counter()
        result = next_(root, info, **args)
        if isawaitable(result):
            return self._timed(result, field, started)
        self._observe(field, started)
        return result

    async def _timed(self, result: Awaitable[Any], field: str, started: float) -> Any:
        try:
            return await result
        finally:
            self._observe(field, started)

    def _observe(self, field: str, started: float) -> None:
        self.metrics.field_duration.labels(field).observe(time.perf_counter() - started)


class ResolverSpans:
    """graphql-core middleware: a span per top-level resolver (``graphql.resolve Query.notes``),
    the parent of the authorization checks and SQL statements it causes."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def resolve(self, next_: Any, root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        if info.path.prev is not None or not recording():
            return next_(root, info, **args)
        field = f"{info.parent_type.name}.{info.field_name}"
        return self._traced(next_, root, info, field, args)

    async def _traced(
        self, next_: Any, root: Any, info: GraphQLResolveInfo[Any], field: str, args: Any
    ) -> Any:
        with self.tracing.span(f"graphql.resolve {field}", **{"graphql.field.path": field}):
            result = next_(root, info, **args)
            return await result if isawaitable(result) else result
