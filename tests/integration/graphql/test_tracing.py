"""Traces end to end: one request with an incoming traceparent gives a connected span tree
(HTTP → GraphQL → resolver → authorization and database) under that trace, exported over
OTLP/HTTP to a local receiver; the same trace id is in the logs and in X-Trace-Id, and no secret
is in any span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pcf_api.composition import build_service
from support.jsonserver import Answer
from support.logs import capture_logs
from support.otlp_receiver import OtlpReceiver, ReceivedSpan
from support.spicedb_server import PRESHARED_KEY, SpiceDBServer

from .conftest import GraphQLClient, running, settings_for

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET_VALUE = "search-words-that-must-stay-private"
HEADER_SECRET = "otlp-api-key-0123456789"
CREATE = 'mutation { createNote(input: {title: "t", content: "c", author: "alice"}) { id } }'
CLIENT_KIND = 3  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_CLIENT


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


def traced(database_url: str, receiver: OtlpReceiver, ratio: str = "1.0") -> object:
    return build_service(
        settings_for(
            database_url,
            PCF_TRACING__ENABLED="true",
            PCF_TRACING__ENDPOINT=receiver.endpoint,
            PCF_TRACING__SAMPLE_RATIO=ratio,
            PCF_TRACING__HEADERS=f"x-api-key={HEADER_SECRET}",
        )
    )


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans}


def ancestors(span: ReceivedSpan, spans: dict[str, ReceivedSpan]) -> list[str]:
    names = []
    while span.parent_span_id in spans:
        span = spans[span.parent_span_id]
        names.append(span.name)
    return names


async def test_one_request_is_one_connected_trace_under_the_callers_trace_id(
    database_url: str, receiver: OtlpReceiver
) -> None:
    with capture_logs() as logs:
        async with running(traced(database_url, receiver)) as http:  # type: ignore[arg-type]
            client = GraphQLClient(http)
            note_id = (await client.create())["id"]
            response = await client.post(
                "query One($id: ID!) { note(id: $id) { id title } }",
                {"id": note_id},
                headers={"traceparent": TRACEPARENT, "X-Demo-User": "alice"},
            )
        # The application stopped: the batch processor has exported everything.
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == TRACE_ID

    spans = [span for span in receiver.received() if span.trace_id == TRACE_ID]
    index = by_id(spans)
    names = {span.name for span in spans}
    assert {
        "POST /graphql",
        "graphql.prepare",
        "graphql.execute",
        "graphql.resolve Query.note",
    } <= names
    server = next(span for span in spans if span.name == "POST /graphql")
    assert server.parent_span_id == PARENT_ID  # a child of the caller's span
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "pcf-api"
    database = [span for span in spans if span.name == "db select"]
    assert database, names
    for span in database:
        assert ancestors(span, index)[:1] in (["graphql.resolve Query.note"], ["authorize"])
        assert "graphql.resolve Query.note" in ancestors(span, index)
        assert ancestors(span, index)[-1] == "POST /graphql"
    authorize = [span for span in spans if span.name == "authorize"]
    assert authorize
    assert all("graphql.resolve Query.note" in ancestors(span, index) for span in authorize)

    lines = [line for line in logs.records() if line.get("trace_id") == TRACE_ID]
    assert any(line["message"] == "request" for line in lines)
    assert all(line.get("span_id") in index for line in lines), lines


async def test_a_sampled_request_without_a_caller_is_one_connected_trace_of_its_own(
    database_url: str, receiver: OtlpReceiver
) -> None:
    async with running(traced(database_url, receiver)) as http:  # type: ignore[arg-type]
        response = await GraphQLClient(http).post(
            "{ notes(limit: 2) { totalCount } }", headers={"X-Demo-User": "alice"}
        )
    assert response.status_code == 200
    trace_id = response.headers["x-trace-id"]
    spans = [span for span in receiver.received() if span.trace_id == trace_id]
    index = by_id(spans)
    [server] = [span for span in spans if span.name == "POST /graphql"]
    assert server.parent_span_id == ""  # the root: nobody called with a traceparent
    assert server.attributes["http.response.status_code"] == 200
    database = [span for span in spans if span.name == "db select"]
    assert database  # made in the SQLite connection threads, under the request's spans
    for span in database:
        assert span.kind == CLIENT_KIND
        assert ancestors(span, index)[:2] == ["graphql.resolve Query.notes", "graphql.execute"]
        assert ancestors(span, index)[-1] == "POST /graphql"


async def test_no_secret_reaches_a_span(database_url: str, receiver: OtlpReceiver) -> None:
    async with running(traced(database_url, receiver)) as http:  # type: ignore[arg-type]
        client = GraphQLClient(http)
        await client.post(
            "query Find($q: String!) { searchNotes(query: $q) { id } }",
            {"q": SECRET_VALUE},
            headers={"Authorization": "Bearer not-a-valid-token-0123456789"},
        )
        await client.post(
            "query Find($q: String!) { searchNotes(query: $q) { id } }", {"q": SECRET_VALUE}
        )
    spans = receiver.received()
    assert spans
    text = repr([(span.name, span.attributes, span.resource) for span in spans])
    for secret in (SECRET_VALUE, "not-a-valid-token-0123456789", HEADER_SECRET):
        assert secret not in text
    assert all(request.get("x-api-key") == HEADER_SECRET for request in receiver.requests)


async def test_unsampled_requests_keep_their_trace_id_and_export_nothing(
    database_url: str, receiver: OtlpReceiver
) -> None:
    with capture_logs() as logs:
        async with running(traced(database_url, receiver, ratio="0")) as http:  # type: ignore[arg-type]
            response = await GraphQLClient(http).post("{ notes { totalCount } }")
    assert response.status_code == 200
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32
    assert receiver.received() == []
    # The logs still carry the trace id, and no span id that would lead nowhere.
    lines = [line for line in logs.records() if line.get("trace_id") == trace_id]
    assert any(line["message"] == "request" for line in lines)
    assert all("span_id" not in line for line in lines), lines


async def test_error_responses_carry_the_span_id(database_url: str, receiver: OtlpReceiver) -> None:
    async with running(traced(database_url, receiver)) as http:  # type: ignore[arg-type]
        missing = await http.get("/missing", headers={"traceparent": TRACEPARENT})
        invalid = await GraphQLClient(http).post(
            "{ nope }", headers={"traceparent": TRACEPARENT, "X-Demo-User": "alice"}
        )
    spans = by_id([span for span in receiver.received() if span.trace_id == TRACE_ID])
    assert missing.json()["error"]["trace_id"] == TRACE_ID
    assert missing.json()["error"]["span_id"] in spans
    assert invalid.json()["errors"][0]["extensions"]["spanId"] in spans


class RecordingSpiceDB(SpiceDBServer):
    """The SpiceDB stand-in, also keeping the traceparent of every call it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.traceparents: list[str] = []

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        self.traceparents.append(headers.get("traceparent", ""))
        return super().handle(method, path, headers, body)


async def test_calls_to_spicedb_are_spans_and_carry_the_trace(
    database_url: str, receiver: OtlpReceiver
) -> None:
    with RecordingSpiceDB() as spicedb:
        settings = settings_for(
            database_url,
            PCF_TRACING__ENABLED="true",
            PCF_TRACING__ENDPOINT=receiver.endpoint,
            PCF_AUTHZ__BACKEND="spicedb",
            PCF_AUTHZ__SPICEDB_ENDPOINT=spicedb.url,
            PCF_AUTHZ__SPICEDB_PRESHARED_KEY=PRESHARED_KEY,
        )
        async with running(build_service(settings)) as http:
            await GraphQLClient(http).post(
                CREATE,
                headers={"traceparent": TRACEPARENT, "X-Demo-User": "alice"},
            )
    spans = [span for span in receiver.received() if span.trace_id == TRACE_ID]
    outbound = [s for s in spans if s.kind == CLIENT_KIND and s.name.startswith("POST")]
    assert outbound, [span.name for span in spans]
    assert any(parent.split("-")[1] == TRACE_ID for parent in spicedb.traceparents if parent)
    assert all(PRESHARED_KEY not in repr(span.attributes) for span in spans)
