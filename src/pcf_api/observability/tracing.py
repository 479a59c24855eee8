"""OpenTelemetry traces: a span tree per request, exported over OTLP/HTTP in batches.

HTTP request → GraphQL prepare / execute → top-level resolvers → authorization checks and SQL
statements, plus outbound HTTP (JWKS, SpiceDB) with ``traceparent`` propagated. An incoming
``traceparent`` (and ``baggage``) is honoured, so the request's trace id — in every log line,
in ``X-Trace-Id`` and in error bodies — is the trace's id, sampled or not.

One provider per application rather than the global one: tests build several applications in
one process. The spans of a sampled request are the service's own (``_RecordedSpan``), handed to
the provider's span processors as the SDK's ``ReadableSpan`` when they end: the SDK's span cost
four times as much to make (docs/benchmarks.md). The SDK's tracer makes the rest: the spans of
outbound HTTP, and a request's span under a caller's ``traceparent``. Spans are encoded for
export by ``pcf_api.observability.otlp`` (the SDK's encoder cost more per span than making the
span). SQL statements get their spans from a hook on the application's engines
(``pcf_api.store.statements``; the OpenTelemetry SQLAlchemy instrumentation patches
``create_engine`` process-wide, once, and listens where SQLAlchemy is slowest); outbound HTTP
uses the httpx instrumentation on the service's own clients.

Span attributes never carry secrets: statements are sent with placeholders (values travel
separately and are not recorded), GraphQL variables and headers are not recorded.
"""

from __future__ import annotations

import time
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
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import Attributes, AttributeValue
from requests.auth import AuthBase

from pcf_api.config import TracingSettings
from pcf_api.observability.otlp import SpanExporter
from pcf_api.observability.tracecontext import span_recording
from pcf_api.secretfiles import RotatingSecret, fixed
from pcf_api.store.statements import StatementEnd, observe_statements

if TYPE_CHECKING:
    from pcf_api.store.database import Database

_STATEMENT_KINDS = ("select", "insert", "update", "delete")
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_NO_SPAN: AbstractContextManager[None] = nullcontext()
_SCOPE = "pcf_api"
# What the SDK gives a root span whose trace id its random id generator drew, and its children.
_UNSAMPLED_ROOT = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSET = Status(StatusCode.UNSET)


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


class _Recorder:
    """Makes the spans of sampled requests and hands each, ended, to the span processors."""

    def __init__(self, resource: Resource, processors: SynchronousMultiSpanProcessor) -> None:
        self.resource = resource
        # As the provider's ``get_tracer(_SCOPE)`` makes it (no version is ""): the exporter
        # groups spans by scope, and the SDK's spans of a request must share the group.
        self.scope = InstrumentationScope(_SCOPE, "")
        self.ids = RandomIdGenerator()
        self._processors = processors

    def root(self, trace_id: int, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        context = SpanContext(
            trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=_SAMPLED_RANDOM
        )
        return _RecordedSpan(
            self, name, context=context, parent=None, kind=kind, attributes=dict(attributes)
        )

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        """A span under the current one (which the caller knows to be sampled), taking
        ``attributes`` as they are: the callers build them for it."""
        parent = trace.get_current_span().get_span_context()
        flags = _SAMPLED_RANDOM if parent.trace_flags.random_trace_id else _SAMPLED
        context = SpanContext(
            parent.trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=parent.trace_state,
        )
        return _RecordedSpan(
            self, name, context=context, parent=parent, kind=kind, attributes=attributes
        )

    def finish(self, span: ReadableSpan) -> None:
        self._processors.on_end(span)


class _RecordedSpan(Span):
    """A sampled span of the service's own making; ended, the SDK's ``ReadableSpan`` of it goes to
    the span processors, as the SDK's own spans do.

    Why not the SDK's ``Span``: measured, starting and ending one cost ≈ 13 µs, this ≈ 3 µs, and a
    sampled notes request makes four (docs/benchmarks.md). What the SDK's does and this leaves
    out: attribute count and length limits and value checks (every attribute here is the
    service's own: a name and a string, number or boolean), links, a lock per span (a span here
    belongs to one request and is ended where it was made), and telling the processors of the
    start and of the ending (``on_start``, ``_on_ending``: the batch processor does nothing with
    either). Processors get the span once ended, as from the SDK's."""

    def __init__(
        self,
        recorder: _Recorder,
        name: str,
        *,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._recorder = recorder
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: list[Event] = []
        self._status = _UNSET
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the error's type only: messages and tracebacks can
        carry data."""
        self.add_event(
            "exception",
            {**(attributes or {}), "exception.type": type(exception).__name__},
            timestamp,
        )

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's: a span once OK stays OK, and UNSET changes nothing."""
        new = status if isinstance(status, Status) else Status(status, description)
        if (
            self._end_time is not None
            or self._status.status_code is StatusCode.OK
            or new.status_code is StatusCode.UNSET
        ):
            return
        self._status = new

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = time.time_ns() if end_time is None else end_time
        recorder = self._recorder
        recorder.finish(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=recorder.resource,
                attributes=self._attributes,
                events=tuple(self._events),
                kind=self._kind,
                status=self._status,
                start_time=self._start_time,
                end_time=self._end_time,
                instrumentation_scope=recorder.scope,
            )
        )


class _CurrentSpan(AbstractContextManager[Span]):
    """A started span, current until the block ends, then ended. An error leaving the block
    sets its status (the error's type only: messages can carry data).

    What ``Tracer.start_as_current_span`` does, in one object instead of two generator-based
    context managers: spans are made on every sampled request, where every call counts."""

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
        processors = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(self._root_sampler),
            active_span_processor=processors,
        )
        self._recorder = _Recorder(self.provider.resource, processors)
        if headers is None and settings.headers is not None:
            headers = fixed("tracing.headers", settings.headers.get_secret_value())
        session = None  # the exporter's own, unless there are headers to send
        if headers is not None:
            session = requests.Session()
            session.auth = _ExportHeaders(headers)
        exporter = SpanExporter(
            endpoint=settings.endpoint, timeout=settings.export_timeout_seconds, session=session
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter, schedule_delay_millis=int(settings.export_interval_seconds * 1000)
            )
        )
        self.tracer = self.provider.get_tracer(_SCOPE)

    def server_span(
        self, name: str, headers: list[tuple[bytes, bytes]], attributes: dict[str, Any]
    ) -> Span:
        """The request's span, a child of the caller's ``traceparent`` when there is one.

        Otherwise a root, whose trace id is drawn here and judged by the sampler's own rule
        (trace id ratio): the requests it would not sample (9 in 10 at 0.1) get a non-recording
        span without going through the SDK's span machinery, which under load cost ≈ 15 µs a
        request (docs/benchmarks.md); the sampled ones a span of the service's own."""
        if any(key in _PROPAGATED for key, _ in headers):
            parent = extract(
                {key.decode("latin-1"): value.decode("latin-1") for key, value in headers}
            )
            return self.tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
        ids = self._recorder.ids
        trace_id = ids.generate_trace_id()
        if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._root_sampler.bound:
            return self._recorder.root(trace_id, name, SpanKind.SERVER, attributes)
        span_id = ids.generate_span_id()
        return NonRecordingSpan(
            SpanContext(trace_id, span_id, is_remote=False, trace_flags=_UNSAMPLED_ROOT)
        )

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Span | None]:
        """A child of the current span; nothing at all when the request is not sampled, so an
        unsampled request (9 in 10 at ratio 0.1) costs one check per would-be span."""
        if not recording():
            return _NO_SPAN
        return _CurrentSpan(self._recorder.child(name, SpanKind.INTERNAL, attributes))

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        """Outbound HTTP spans, and ``traceparent`` sent along."""
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_engine(self, database: Database) -> None:
        """A client span per SQL statement (its kind and the statement with placeholders)."""
        recorder = self._recorder
        system = database.dialect_name

        def traced(statement: str) -> StatementEnd | None:
            if not recording():
                return None
            kind = statement_kind(statement)
            span = recorder.child(
                f"db {kind}",
                SpanKind.CLIENT,
                {"db.system": system, "db.operation.name": kind, "db.query.text": statement},
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
