"""Request spans and their sampling decision, and the child spans made while they are current."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

from pcf_api.config import TracingSettings
from pcf_api.observability.tracing import CurrentRequestSpan, Tracing, recording, trace_id_of
from support.otlp_receiver import OtlpReceiver

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


def sampled(span: trace.Span) -> bool:
    return span.get_span_context().trace_flags.sampled


class Traced:
    def __init__(self, ratio: float) -> None:
        settings = TracingSettings(
            enabled=True,
            endpoint="http://127.0.0.1:9/v1/traces",  # nothing listens: exports fail at once
            sample_ratio=ratio,
            export_timeout_seconds=0.1,
        )
        self.tracing = Tracing(settings, version="test", environment="development")
        self.exported = InMemorySpanExporter()
        self.tracing.provider.add_span_processor(SimpleSpanProcessor(self.exported))

    def request(self, headers: list[tuple[bytes, bytes]] | None = None) -> trace.Span:
        span = self.tracing.server_span(
            "POST /graphql", headers or [(b"host", b"api")], {"http.route": "/graphql"}
        )
        span.end()
        return span


@contextmanager
def current(request: trace.Span) -> Iterator[None]:
    """The request's span current, as the middleware makes it, and ended after."""
    made_current = CurrentRequestSpan(request)
    try:
        yield
    finally:
        made_current.close()
        request.end()


@pytest.fixture
def traced() -> Iterator[dict[float, Traced]]:
    made: dict[float, Traced] = {}

    yield made
    for each in made.values():
        each.tracing.shutdown()


def at(traced: dict[float, Traced], ratio: float) -> Traced:
    traced[ratio] = Traced(ratio)
    return traced[ratio]


def test_an_unsampled_request_has_a_valid_trace_id_and_exports_nothing(
    traced: dict[float, Traced],
) -> None:
    never = at(traced, 0.0)
    spans = [never.request() for _ in range(50)]
    contexts = [span.get_span_context() for span in spans]
    assert not any(sampled(span) for span in spans)
    assert all(context.is_valid and not context.trace_flags.sampled for context in contexts)
    assert len({context.trace_id for context in contexts}) == 50
    assert never.exported.get_finished_spans() == ()


def test_a_sampled_request_is_a_recorded_server_span(traced: dict[float, Traced]) -> None:
    always = at(traced, 1.0)
    span = always.request()
    assert span.get_span_context().trace_flags.sampled
    [exported] = always.exported.get_finished_spans()
    assert exported.name == "POST /graphql"
    assert exported.kind is trace.SpanKind.SERVER
    assert exported.parent is None
    assert exported.context.trace_id == span.get_span_context().trace_id
    assert exported.attributes == {"http.route": "/graphql"}


def test_the_ratio_is_applied_once_with_the_samplers_own_rule(traced: dict[float, Traced]) -> None:
    half = at(traced, 0.5)
    bound = TraceIdRatioBased(0.5).bound
    spans = [half.request() for _ in range(2000)]
    chosen = [span for span in spans if sampled(span)]
    # Decided twice (by this rule, then again on another draw) it would be a quarter.
    assert 0.44 < len(chosen) / len(spans) < 0.56
    for span in spans:
        below = span.get_span_context().trace_id & LIMIT < bound
        assert below == sampled(span)
    assert len(half.exported.get_finished_spans()) == len(chosen)


def test_a_sampled_root_span_carries_what_the_sdk_would_give_it(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    span = always.request()
    flags = span.get_span_context().trace_flags
    assert flags.sampled
    assert flags.random_trace_id  # W3C level 2: the trace id was drawn at random
    sdk_span = always.tracing.tracer.start_span("made by the SDK")
    sdk_span.end()
    exported, made_by_sdk = always.exported.get_finished_spans()
    # The same scope and resource as the SDK's spans: the exporter groups spans by both.
    assert exported.instrumentation_scope == made_by_sdk.instrumentation_scope
    assert exported.instrumentation_scope is not None
    assert exported.instrumentation_scope.name == "pcf_api"
    assert exported.resource is made_by_sdk.resource
    assert exported.resource.attributes["service.name"] == "pcf-api"
    assert exported.start_time is not None
    assert exported.end_time is not None
    assert exported.start_time <= exported.end_time
    assert exported.status.status_code is StatusCode.UNSET


def test_a_child_of_a_callers_span_keeps_the_callers_trace_and_trace_state(
    traced: dict[float, Traced],
) -> None:
    tracing = at(traced, 0.0)
    request = tracing.tracing.server_span(
        "POST /graphql",
        [
            (b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01".encode()),
            (b"tracestate", b"vendor=opaque"),
        ],
        {},
    )
    with current(request), tracing.tracing.span("graphql.execute"):
        pass
    execute, server = tracing.exported.get_finished_spans()
    assert f"{execute.context.trace_id:032x}" == CALLER_TRACE
    assert execute.parent is not None
    assert execute.parent.span_id == server.context.span_id
    assert execute.context.trace_flags.sampled
    assert not execute.context.trace_flags.random_trace_id  # the caller did not say so
    assert dict(execute.context.trace_state) == {"vendor": "opaque"}


def test_a_span_ended_twice_is_exported_once_and_keeps_what_it_had_at_its_end(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    span = always.tracing.server_span("POST /graphql", [], {"http.route": "/graphql"})
    span.set_attribute("http.response.status_code", 200)
    span.end()
    assert not span.is_recording()
    span.set_attribute("http.response.status_code", 500)
    span.set_status(StatusCode.ERROR)
    span.update_name("renamed")
    span.add_event("late")
    span.end()
    [exported] = always.exported.get_finished_spans()
    assert exported.name == "POST /graphql"
    assert exported.attributes == {"http.route": "/graphql", "http.response.status_code": 200}
    assert exported.status.status_code is StatusCode.UNSET
    assert exported.events == ()


def test_a_child_of_the_services_own_root_keeps_its_trace_and_flags(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    tracing = always.tracing
    request = tracing.server_span("POST /graphql", [], {})
    with current(request), tracing.span("graphql.execute"):
        pass
    execute, server = always.exported.get_finished_spans()
    assert execute.context.trace_id == server.context.trace_id
    assert execute.context.span_id != server.context.span_id
    assert execute.context.trace_flags == server.context.trace_flags  # sampled, random id


def test_a_span_once_ok_stays_ok_and_unset_changes_nothing(traced: dict[float, Traced]) -> None:
    always = at(traced, 1.0)
    ok = always.tracing.server_span("POST /graphql", [], {})
    ok.set_status(StatusCode.OK)
    ok.set_status(StatusCode.ERROR, "late")
    ok.end()
    failed = always.tracing.server_span("POST /graphql", [], {})
    failed.set_status(Status(StatusCode.ERROR, "TimeoutError"))
    failed.set_status(StatusCode.UNSET)
    failed.end()
    first, second = always.exported.get_finished_spans()
    assert first.status.status_code is StatusCode.OK
    assert second.status.status_code is StatusCode.ERROR
    assert second.status.description == "TimeoutError"


def test_the_request_span_keeps_its_own_copy_of_the_attributes_given(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    given = {"http.route": "/graphql"}
    span = always.tracing.server_span("POST /graphql", [], given)
    given["http.route"] = "/changed"
    span.end()
    [exported] = always.exported.get_finished_spans()
    assert exported.attributes == {"http.route": "/graphql"}


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_a_callers_sampled_traceparent_is_followed_whatever_the_ratio(
    traced: dict[float, Traced], ratio: float
) -> None:
    tracing = at(traced, ratio)
    span = tracing.request([(b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01".encode())])
    assert sampled(span)
    assert f"{span.get_span_context().trace_id:032x}" == CALLER_TRACE
    [exported] = tracing.exported.get_finished_spans()
    assert exported.parent is not None
    assert exported.parent.is_remote


def test_a_callers_unsampled_traceparent_is_not_sampled_even_at_ratio_one(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    span = always.request([(b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-00".encode())])
    assert not sampled(span)
    assert f"{span.get_span_context().trace_id:032x}" == CALLER_TRACE
    assert always.exported.get_finished_spans() == ()


def test_a_child_span_is_current_inside_its_block_and_ended_after(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    tracing = always.tracing
    request = tracing.server_span("POST /graphql", [], {})
    with current(request):
        with tracing.span("graphql.execute", **{"graphql.operation_type": "query"}) as child:
            assert trace.get_current_span() is child
            assert recording()
        assert trace.get_current_span() is request
    assert not recording()
    execute, server = always.exported.get_finished_spans()
    assert execute.name == "graphql.execute"
    assert execute.parent is not None
    assert execute.parent.span_id == server.context.span_id
    assert execute.attributes == {"graphql.operation_type": "query"}


def test_an_error_leaving_a_child_span_marks_it_with_the_error_type_only(
    traced: dict[float, Traced],
) -> None:
    always = at(traced, 1.0)
    tracing = always.tracing
    request = tracing.server_span("POST /graphql", [], {})
    with current(request):
        with pytest.raises(LookupError), tracing.span("graphql.execute"):
            raise LookupError("note notes:secret-id does not exist")
        assert trace.get_current_span() is request
    execute = always.exported.get_finished_spans()[0]
    assert execute.status.status_code is StatusCode.ERROR
    assert execute.status.description == "LookupError"
    assert execute.events == ()  # no exception event: its message and traceback stay out
    assert "secret-id" not in str(execute.to_json())


def test_no_child_span_is_made_outside_a_sampled_request(traced: dict[float, Traced]) -> None:
    never = at(traced, 0.0)
    tracing = never.tracing
    request = tracing.server_span("POST /graphql", [], {})
    with current(request), tracing.span("graphql.execute") as child:
        assert not recording()
        assert child is None
    assert never.exported.get_finished_spans() == ()


def test_a_root_span_made_after_a_sampled_request_gets_a_trace_id_of_its_own(
    traced: dict[float, Traced],
) -> None:
    """The trace id handed to the SDK for a sampled request is taken once."""
    always = at(traced, 1.0)
    request = always.request()
    elsewhere = always.tracing.tracer.start_span("outbound, outside any request")
    elsewhere.end()
    assert elsewhere.get_span_context().trace_id != request.get_span_context().trace_id


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(refuse_with=(503,)) as server:
        yield server


def exporting_to(receiver: OtlpReceiver) -> Tracing:
    settings = TracingSettings(enabled=True, endpoint=receiver.endpoint, sample_ratio=1.0)
    return Tracing(settings, version="test", environment="development")


def test_a_batch_reaches_the_receiver_after_a_refusal_is_retried(receiver: OtlpReceiver) -> None:
    tracing = exporting_to(receiver)
    try:
        request = tracing.server_span("POST /graphql", [], {"http.route": "/graphql"})
        with current(request), tracing.span("graphql.execute"):
            pass
        assert tracing.provider.force_flush()
    finally:
        tracing.shutdown()
    assert receiver.attempts == 2  # 503, then accepted
    spans = receiver.received()
    assert sorted(span.name for span in spans) == ["POST /graphql", "graphql.execute"]
    assert {span.trace_id for span in spans} == {trace_id_of(request)}


def test_a_value_that_cannot_be_an_attribute_is_left_out_and_the_batch_sent(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's span checks attribute values as they are set (a warning, and the value replaced),
    so a bad one never reaches the encoder, where it would fail the whole batch."""
    tracing = exporting_to(receiver)
    try:
        request = tracing.server_span("POST /graphql", [], {"http.route": "/graphql"})
        with current(request), tracing.span("graphql.execute") as child:
            assert child is not None
            child.set_attribute("odd", object())  # type: ignore[arg-type]
            child.set_attribute("nested", ["fine", object()])  # type: ignore[list-item]
            child.set_attribute("kept", "yes")
        assert tracing.provider.force_flush()
    finally:
        tracing.shutdown()
    spans = {span.name: span for span in receiver.received()}
    assert set(spans) == {"POST /graphql", "graphql.execute"}  # the whole batch arrived
    attributes = spans["graphql.execute"].attributes
    assert attributes["kept"] == "yes"
    assert attributes["odd"] is None  # what the SDK makes of a value it cannot take
    assert [value.string_value for value in attributes["nested"].values] == ["fine", ""]
    assert any("Invalid type" in record.getMessage() for record in caplog.records)
