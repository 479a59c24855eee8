"""The OTLP span encoder writes what the SDK's encoder writes, and the exporter sends it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from pcf_api.observability.otlp import SpanExporter, encode_spans
from support.logs import capture_logs
from support.otlp_receiver import OtlpReceiver

REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "opaque"), ("other", "1")]),
)
LINKED = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
LOCAL_LINK = SpanContext(0x9ABC, 0xDEF0, is_remote=False)


def finished_spans(resource: Resource | None = None) -> list[ReadableSpan]:
    """Spans with every field the encoder writes: each kind, a remote parent with trace
    state, every attribute type, events, links, each status, dropped attributes and events,
    and two instrumentation scopes."""
    provider = TracerProvider(
        resource=resource
        or Resource.create({"service.name": "pcf-api"}, "https://opentelemetry.io/schemas/1.21.0"),
        span_limits=SpanLimits(
            max_span_attributes=10, max_events=2, max_event_attributes=1, max_link_attributes=1
        ),
    )
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    ours = provider.get_tracer("pcf_api")
    theirs = provider.get_tracer(
        "opentelemetry.instrumentation.httpx",
        "0.66b2",
        schema_url="https://opentelemetry.io/schemas/1.11.0",
        attributes={"scope.owner": "tests"},
    )
    caller = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    root = ours.start_span(
        "POST /graphql",
        context=caller,
        kind=SpanKind.SERVER,
        attributes={
            "text": "notes",
            "flag": True,
            "count": 3,
            "ratio": 0.25,
            "texts": ("a", "b"),
            "counts": [1, 2],
            "flags": [True, False],
            "ratios": [0.5, 1.5],
        },
        links=[Link(LINKED, {"link.dropped": 1, "link.reason": "retry"}), Link(LOCAL_LINK)],
    )
    root.add_event("dropped: the oldest of three")
    root.add_event("kept", {"dropped": 0, "attempt": 1})
    root.add_event("kept too")
    for index in range(4):
        root.set_attribute(f"extra.{index}", index)  # 12 for a limit of 10: the oldest 2 go
    with trace.use_span(root, end_on_exit=False):
        for kind in SpanKind:
            child = theirs.start_span(f"child {kind.name}", kind=kind)
            child.set_status(Status(StatusCode.OK))
            child.end()
        failed = ours.start_span("db select", kind=SpanKind.CLIENT)
        failed.set_status(Status(StatusCode.ERROR, "OperationalError"))
        failed.end()
    root.end()
    return list(exported.get_finished_spans())


def decoded(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_the_encoding_is_byte_for_byte_the_sdks() -> None:
    spans = finished_spans()
    assert len(spans) == 7
    assert encode_spans(spans) == sdk_encode_spans(spans).SerializePartialToString()


def test_values_the_sdk_cleans_away_are_written_as_the_sdk_would() -> None:
    """Bytes, None and mappings do not pass the SDK's attribute cleaning, but a span made
    elsewhere could carry them."""
    span = ReadableSpan(
        "raw",
        context=LOCAL_LINK,
        attributes={"bytes": b"\x00\x01", "none": None, "map": {"k": 1, "nested": ["v"]}},  # type: ignore[dict-item]
        resource=Resource.create({}),
    )
    assert encode_spans([span]) == sdk_encode_spans([span]).SerializePartialToString()


def test_every_field_of_a_span_is_written() -> None:
    spans = finished_spans()
    request = decoded(encode_spans(spans))
    (resource_spans,) = request.resource_spans
    root = next(
        span
        for scope in resource_spans.scope_spans
        for span in scope.spans
        if span.name == "POST /graphql"
    )
    assert root.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert root.parent_span_id.hex() == "00f067aa0ba902b7"
    assert root.trace_state == "vendor=opaque,other=1"
    assert root.flags == 0x300  # the parent is remote
    assert [event.name for event in root.events] == ["kept", "kept too"]
    assert root.events[0].attributes[0].value.int_value == 1
    assert root.events[0].dropped_attributes_count == 1
    assert root.dropped_events_count == 1
    assert root.dropped_attributes_count == 2
    assert [link.flags for link in root.links] == [0x300, 0x100]
    assert root.links[0].attributes[0].key == "link.reason"
    assert root.links[0].dropped_attributes_count == 1
    values = {kv.key: kv.value for kv in root.attributes}
    assert "text" not in values
    assert values["ratio"].double_value == 0.25
    assert values["extra.3"].int_value == 3
    assert [v.bool_value for v in values["flags"].array_value.values] == [True, False]
    assert [v.int_value for v in values["counts"].array_value.values] == [1, 2]


def test_spans_are_grouped_by_resource_then_by_scope() -> None:
    first = finished_spans()
    second = finished_spans(Resource.create({"service.name": "another"}))
    request = decoded(encode_spans(first + second))
    assert len(request.resource_spans) == 2
    for resource_spans in request.resource_spans:
        scopes = {scope.scope.name: len(scope.spans) for scope in resource_spans.scope_spans}
        assert scopes == {"pcf_api": 2, "opentelemetry.instrumentation.httpx": 5}
    names = {kv.value.string_value for kv in request.resource_spans[1].resource.attributes}
    assert "another" in names


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == b""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(refuse_with=(503,)) as server:
        yield server


def test_a_batch_reaches_a_receiver_after_a_refusal_is_retried(receiver: OtlpReceiver) -> None:
    exporter = SpanExporter(endpoint=receiver.endpoint, timeout=5)
    try:
        assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert receiver.attempts == 2  # 503, then accepted
    spans = receiver.received()
    assert len(spans) == 7
    assert {span.trace_id for span in spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


def test_an_attribute_that_cannot_be_encoded_is_left_out_and_the_batch_sent(
    receiver: OtlpReceiver,
) -> None:
    odd = ReadableSpan(
        "odd",
        context=LOCAL_LINK,
        attributes={"value": object(), "kept": "yes", "nested": ["fine", object()]},  # type: ignore[dict-item]
        resource=Resource.create({}),
    )
    exporter = SpanExporter(endpoint=receiver.endpoint, timeout=5)
    with capture_logs() as logs:
        try:
            assert exporter.export([*finished_spans(), odd]) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
    spans = {span.name: span for span in receiver.received()}
    assert len(receiver.received()) == 8
    assert spans["odd"].attributes == {"kept": "yes"}
    lines = logs.records("span attribute left out: its value cannot be encoded")
    assert [(line["attribute"], line["value_type"]) for line in lines] == [
        ("value", "object"),
        ("nested", "list"),
    ]
    assert all(line["level"] == "WARN" for line in lines)


def test_nothing_is_sent_after_shutdown(receiver: OtlpReceiver) -> None:
    exporter = SpanExporter(endpoint=receiver.endpoint, timeout=5)
    exporter.shutdown()
    assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
    assert receiver.attempts == 0
