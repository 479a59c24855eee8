"""OpenTelemetry traces: a span tree per request, exported over OTLP/HTTP in batches.

HTTP request → GraphQL prepare / execute → top-level resolvers → authorization checks and SQL
statements, plus outbound HTTP (JWKS, SpiceDB) with ``traceparent`` propagated. An incoming
``traceparent`` (and ``baggage``) is honoured, so the request's trace id — in every log line,
in ``X-Trace-Id`` and in error bodies — is the trace's id, sampled or not.

Spans, the batch processor and the OTLP/HTTP exporter are the SDK's, used as published: what
the SDK does per span (attribute checks and limits, the processors' hooks, the exporter's
encoding, retries and settings) holds for every span, and no private name is relied upon. One
provider per application rather than the global one: tests build several applications in one
process. SQL statements get their spans from a hook on the application's engines
(``pcf_api.store.statements``; the OpenTelemetry SQLAlchemy instrumentation patches
``create_engine`` process-wide, once, and listens where SQLAlchemy is slowest); outbound HTTP
uses the httpx instrumentation on the service's own clients.

Span attributes never carry secrets: statements are sent with placeholders (values travel
separately and are not recorded), GraphQL variables and headers are not recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import requests
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from requests.auth import AuthBase

from pcf_api.config import TracingSettings
from pcf_api.observability.tracecontext import span_recording
from pcf_api.secretfiles import RotatingSecret, fixed
from pcf_api.store.statements import StatementEnd, observe_statements

if TYPE_CHECKING:
    from pcf_api.store.database import Database

_STATEMENT_KINDS = ("select", "insert", "update", "delete")
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_NO_SPAN: AbstractContextManager[None] = nullcontext()
_NO_PARENT = Context()
# What the SDK gives an unsampled root span drawn by its random id generator.
_UNSAMPLED_ROOT = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)


def parse_headers(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (the OTEL_EXPORTER_OTLP_HEADERS format) as a dict."""
    headers: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


class _ExportHeaders(AuthBase):
    """``tracing.headers`` on every export, read when it is sent (so a rotated API key applies
    to the next batch). requests applies a session's auth last, so these win over the OTEL_*
    header variables, as the setting did when it was given to the exporter."""

    def __init__(self, headers: RotatingSecret) -> None:
        self._headers = headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(parse_headers(self._headers.value))
        return request


class _DrawnTraceIds(RandomIdGenerator):
    """The SDK's random ids, except for a root span whose trace id the service drew first.

    ``Tracing.server_span`` decides whether a request is sampled before it calls the SDK; when
    it is, the SDK must make the span on that very trace id, so that its own sampler (the same
    ratio rule) agrees and the ratio applies once. Per thread, and taken by the next root span
    only."""

    def __init__(self) -> None:
        self._drawn = threading.local()

    def hand_over(self, trace_id: int | None) -> None:
        self._drawn.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self._drawn, "trace_id", None)
        if trace_id is None:
            return super().generate_trace_id()
        self._drawn.trace_id = None
        return trace_id

    def draw_trace_id(self) -> int:
        return super().generate_trace_id()


class _CurrentSpan(AbstractContextManager[Span]):
    """A started span, current until the block ends, then ended. An error leaving the block
    sets its status (the error's type only: messages can carry data).

    Not ``Tracer.start_as_current_span``, which by default records an error's message and
    traceback (as an event and in the status description); and one object here instead of its
    two generator-based context managers, made for every span of a sampled request."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is not None:
                self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)


class CurrentRequestSpan:
    """The request's span made current until ``close``: in OpenTelemetry's context (the parent
    of child spans, the outbound ``traceparent``) and for ``recording()``."""

    __slots__ = ("_context", "_recording")

    def __init__(self, span: Span) -> None:
        self._context = otel_context.attach(trace.set_span_in_context(span))
        self._recording = span_recording.set(span.is_recording())

    def close(self) -> None:
        span_recording.reset(self._recording)
        otel_context.detach(self._context)


class Tracing:
    """The application's tracer provider, its span export, and the spans the service makes."""

    def __init__(
        self,
        settings: TracingSettings,
        *,
        version: str,
        environment: str,
        headers: RotatingSecret | None = None,
    ) -> None:
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": version,
                "deployment.environment": environment,
            }
        )
        self._root_sampler = TraceIdRatioBased(settings.sample_ratio)
        self._ids = _DrawnTraceIds()
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(self._root_sampler), id_generator=self._ids
        )
        if headers is None and settings.headers is not None:
            headers = fixed("tracing.headers", settings.headers.get_secret_value())
        session = None  # the exporter's own, unless there are headers to send
        if headers is not None:
            session = requests.Session()
            session.auth = _ExportHeaders(headers)
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, timeout=settings.export_timeout_seconds, session=session
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter, schedule_delay_millis=int(settings.export_interval_seconds * 1000)
            )
        )
        self.tracer = self.provider.get_tracer("pcf_api")

    def server_span(
        self, name: str, headers: list[tuple[bytes, bytes]], attributes: dict[str, Any]
    ) -> Span:
        """The request's span, a child of the caller's ``traceparent`` when there is one.

        Otherwise a root, whose trace id is drawn here and judged by the sampler's published
        rule (``TraceIdRatioBased``: the low 64 bits below its ``bound``): the requests it would
        not sample (9 in 10 at 0.1) get a non-recording span without the SDK's sampling and span
        machinery, the cost tracing would otherwise add to every request; the sampled ones are
        made by the SDK's tracer on that trace id."""
        if any(key in _PROPAGATED for key, _ in headers):
            parent = extract(
                {key.decode("latin-1"): value.decode("latin-1") for key, value in headers}
            )
            return self.tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
        ids = self._ids
        trace_id = ids.draw_trace_id()
        if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._root_sampler.bound:
            ids.hand_over(trace_id)
            try:
                return self.tracer.start_span(
                    name, context=_NO_PARENT, kind=SpanKind.SERVER, attributes=attributes
                )
            finally:
                ids.hand_over(None)  # already taken, unless the SDK made no span
        return NonRecordingSpan(
            SpanContext(
                trace_id, ids.generate_span_id(), is_remote=False, trace_flags=_UNSAMPLED_ROOT
            )
        )

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Span | None]:
        """A child of the current span; nothing at all when the request is not sampled, so an
        unsampled request (9 in 10 at ratio 0.1) costs one check per would-be span."""
        if not recording():
            return _NO_SPAN
        return _CurrentSpan(self.tracer.start_span(name, attributes=attributes))

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        """Outbound HTTP spans, and ``traceparent`` sent along."""
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_engine(self, database: Database) -> None:
        """A client span per SQL statement (its kind and the statement with placeholders)."""
        tracer = self.tracer
        system = database.dialect_name

        def traced(statement: str) -> StatementEnd | None:
            if not recording():
                return None
            kind = statement_kind(statement)
            span = tracer.start_span(
                f"db {kind}",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": system,
                    "db.operation.name": kind,
                    "db.query.text": statement,
                },
            )

            def end(error: BaseException | None) -> None:
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.end()

            return end

        for engine in database.statement_engines:
            observe_statements(engine, traced)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (called when the application stops)."""
        self.provider.shutdown()


def recording() -> bool:
    """Whether the request being served is traced and sampled, so its child spans are made."""
    return span_recording.get()


def statement_kind(statement: str) -> str:
    """select, insert, update, delete or other: the label and span name of a SQL statement."""
    head = statement.lstrip()[:6].lower()
    return head if head in _STATEMENT_KINDS else "other"


def trace_id_of(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def optional_span(
    tracing: Tracing | None, name: str, prefix: str, attributes: Mapping[str, Any]
) -> AbstractContextManager[Span | None]:
    """``tracing.span`` with the attributes named ``<prefix>.<key>``, when tracing is on and the
    request sampled; else nothing, and the attribute names are not even built."""
    if tracing is None or not recording():
        return _NO_SPAN
    return tracing.span(name, **{f"{prefix}.{key}": value for key, value in attributes.items()})
