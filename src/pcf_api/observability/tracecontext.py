"""W3C trace context: the trace id every log line and error of a request carries.

An incoming ``traceparent`` header is honoured so a request can be followed across services;
otherwise a fresh random trace id is made. https://www.w3.org/TR/trace-context/#traceparent-header
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

from opentelemetry import trace

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_INVALID_TRACE_ID = "0" * 32
_INVALID_PARENT_ID = "0" * 16

current_trace_id: ContextVar[str | None] = ContextVar("current_trace_id", default=None)
# Whether the span of the request being served records (it is sampled), and with it every span
# made under it. Set with the request's span (``tracing.CurrentRequestSpan``): asked several
# times a request, and a context variable of its own is cheaper to read than OpenTelemetry's
# current span (docs/benchmarks.md, change 13).
span_recording: ContextVar[bool] = ContextVar("span_recording", default=False)


# A generator of our own, seeded from the OS: code that seeds the global `random` module (tests,
# libraries) must not make trace ids repeat.
_random = random.Random()  # noqa: S311 - ids need uniqueness, not secrecy


def new_trace_id() -> str:
    """128 random bits, never the all-zero invalid id. Trace ids need uniqueness, not secrecy,
    so the fast non-cryptographic generator is enough (OpenTelemetry's SDK does the same)."""
    return f"{_random.getrandbits(128) or 1:032x}"


def trace_id_from_traceparent(header: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` header, else None (the caller makes a new one)."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _INVALID_TRACE_ID or parent_id == _INVALID_PARENT_ID:
        return None
    return trace_id


def trace_id_for_request(traceparent: str | None) -> str:
    return trace_id_from_traceparent(traceparent) or new_trace_id()


def current_span_id() -> str | None:
    """The id (16 hex digits) of the OpenTelemetry span active now, if the request is sampled
    (``span_recording``). An unsampled request's span is never exported: its id would lead
    nowhere."""
    if not span_recording.get():
        return None
    return f"{trace.get_current_span().get_span_context().span_id:016x}"
