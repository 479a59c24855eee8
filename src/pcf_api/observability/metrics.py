"""Prometheus metrics: what the dashboard and the alerts read, with bounded label sets.

One registry per application (tests build many applications in one process). Requests are
observed on their path; state that already lives elsewhere (the connection pool, health
results, subscriptions, the authorization cache, rate-limit rejections, the write queue) is
read when Prometheus scrapes, through ``sources``, so those components know nothing of
Prometheus.

Every metric stays under 1000 label sets: routes are the service's route templates (anything
else is ``other``), methods come from a fixed list, and operation names are the first
``MAX_OPERATION_NAMES`` well-formed names this process sees; later ones are ``other``.

One process per pod: the registry lives in the process, so several worker processes would
each export a partial view. ``pcf-api serve`` runs exactly one (see docs/observability.md).
"""

from __future__ import annotations

import re
import secrets
from base64 import b64decode
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from pcf_api.secretfiles import RotatingSecret, fixed

M = TypeVar("M", Counter, Histogram)

MAX_OPERATION_NAMES = 20
OTHER = "other"
METRICS_PATH = "/metrics"
READINESS_STATUSES = ("starting", "healthy", "degraded", "unhealthy")
ROUTES = frozenset({"/graphql", "/health", "/health/ready", "/version", "/schema", "/metrics"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OPERATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# Request latencies from 5 ms to 30 s (the request deadline), dense where the SLO is (≤ 500 ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0)

Source = Callable[[], Iterable[Metric]]

# No ``*_created`` series: they double the series of every counter and histogram, and nothing
# here reads them (rate() handles restarts through counter resets).
disable_created_metrics()  # type: ignore[no-untyped-call]


def route_label(path: str) -> str:
    return path if path in ROUTES else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class OperationNames:
    """Operation names as labels: the first ``capacity`` well-formed names, then ``other``.

    A client can send any name; without a cap a flood of random names would create a series
    each and exhaust Prometheus. Anonymous operations are ``anonymous``."""

    def __init__(self, capacity: int = MAX_OPERATION_NAMES) -> None:
        self.capacity = capacity
        self._known: set[str] = set()

    def label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name in self._known:
            return name
        if len(self._known) < self.capacity and _OPERATION_NAME.fullmatch(name):
            self._known.add(name)
            return name
        return OTHER


class _Children(Generic[M]):
    """A labelled metric's children by label values, looked up once each.

    ``labels()`` checks the values and takes a lock on every call, several times per request;
    the label sets are bounded (``OperationNames``, route templates, status codes), so this is
    too. Safe from several threads: a lost race only asks ``labels()`` twice for the same child.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class _Sources(Collector):
    """Reads the state of other components at scrape time."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            yield from source()


class Metrics:
    def __init__(self, *, version: str, environment: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.operation_names = OperationNames()
        self._sources = _Sources()
        self.registry.register(self._sources)
        info = Gauge(
            "pcf_api_build_info",
            "Always 1; the labels say which version runs in which environment.",
            ["version", "environment"],
            registry=self.registry,
        )
        info.labels(version=version, environment=environment).set(1)
        self.http_requests = Counter(
            "http_request_total",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.graphql_requests = Counter(
            "graphql_request_total",
            "GraphQL operations over HTTP; status is ok or the first error's code.",
            ["operation_type", "operation_name", "status"],
            registry=self.registry,
        )
        self.graphql_duration = Histogram(
            "graphql_request_duration_seconds",
            "Time to parse, check and execute one GraphQL operation.",
            ["operation_type", "operation_name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.field_duration = Histogram(
            "graphql_field_resolution_duration_seconds",
            "Time in top-level resolvers (only with metrics.field_timing).",
            ["field"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )
        self.database_queries = Counter(
            "database_query_total",
            "SQL statements sent, by kind.",
            ["operation"],
            registry=self.registry,
        )
        self.database_duration = Histogram(
            "database_query_duration_seconds",
            "Time from sending a SQL statement to its result.",
            ["operation"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )

        self._http_requests = _Children(self.http_requests)
        self._http_duration = _Children(self.http_duration)
        self._graphql_requests = _Children(self.graphql_requests)
        self._graphql_duration = _Children(self.graphql_duration)
        self._database_queries = _Children(self.database_queries)
        self._database_duration = _Children(self.database_duration)

    def add_source(self, source: Source) -> None:
        """A callable producing metric families from some component's state, at each scrape."""
        self._sources.sources.append(source)

    def observe_http(self, method: str, path: str, status: int, seconds: float) -> None:
        method, route = method_label(method), route_label(path)
        self._http_requests(method, route, str(status)).inc()
        self._http_duration(method, route).observe(seconds)

    def observe_graphql(
        self, operation_type: str, operation_name: str | None, status: str, seconds: float
    ) -> None:
        name = self.operation_names.label(operation_name)
        self._graphql_requests(operation_type, name, status).inc()
        self._graphql_duration(operation_type, name).observe(seconds)

    def observe_query(self, operation: str, seconds: float) -> None:
        self._database_queries(operation).inc()
        self._database_duration(operation).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HealthReport(Protocol):
    def report(self) -> dict[str, Any]: ...


def health_metrics(health: HealthReport) -> Iterable[Metric]:
    """Readiness, and each dependency check's latest result: up (1) or down (0), how long it
    took. A check that has not run yet is not reported."""
    report = health.report()
    readiness = GaugeMetricFamily(
        "pcf_api_readiness",
        "1 for the readiness status the service reports now, 0 for the others.",
        labels=["status"],
    )
    for status in READINESS_STATUSES:
        readiness.add_metric([status], 1.0 if report["status"] == status else 0.0)
    up = GaugeMetricFamily(
        "external_service_health",
        "1 when the dependency's latest check passed, 0 when it failed.",
        labels=["service", "critical"],
    )
    latency = GaugeMetricFamily(
        "external_service_latency_seconds",
        "Duration of the dependency's latest check.",
        labels=["service"],
    )
    for name, entry in report["services"].items():
        if entry["status"] == "unknown":
            continue
        critical = "true" if entry["critical"] else "false"
        up.add_metric([name, critical], 1.0 if entry["status"] == "up" else 0.0)
        latency.add_metric([name], entry["latency_ms"] / 1000)
    return [readiness, up, latency]


def dropped_lines_metrics(dropped: Callable[[], Mapping[str, int]]) -> Iterable[Metric]:
    """Log lines dropped because the log output's buffer was full, by level (every level
    exported from the start, so ``rate()`` sees the first loss)."""
    family = CounterMetricFamily(
        "log_lines_dropped",
        "Log lines dropped, not waited for: stdout's reader fell behind, the buffer was full.",
        labels=["level"],
    )
    for level, count in dropped().items():
        family.add_metric([level], float(count))
    return [family]


class MetricsEndpoint:
    """``GET /metrics`` in the Prometheus text format, optionally behind HTTP basic auth (the
    password is read at each request, so a rotated one applies at once)."""

    def __init__(
        self, metrics: Metrics, *, username: str, password: str | RotatingSecret | None
    ) -> None:
        self.metrics = metrics
        self.username = username
        self.password = None if password is None else fixed("metrics.password", password)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.password is not None and not self._authorized(scope):
            await _answer(
                send,
                401,
                b"authentication required\n",
                [(b"www-authenticate", b'Basic realm="metrics"')],
            )
            return
        body = self.metrics.exposition()
        await _answer(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self._matches(value)
        return False

    def _matches(self, header: bytes) -> bool:
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            username, _, password = b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.password.value if self.password is not None else ""
        # Both compared in constant time, so neither leaks through timing.
        user_ok = secrets.compare_digest(username.encode(), self.username.encode())
        password_ok = secrets.compare_digest(password.encode(), expected.encode())
        return user_ok and password_ok


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
