"""The HTTP middleware of the service, as plain ASGI callables (no per-request Request objects).

Order, outermost first (see ``app.create_app``): request context → CORS (when origins are
allowed) → error boundary → request timeout → body limit → fault injection (tests only) → routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.trace import Status, StatusCode
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pcf_api.errors import AppError, ErrorCode, error_body
from pcf_api.observability.logging import (
    RequestLog,
    access_log,
    current_request_log,
    get_logger,
    request_credentials,
)
from pcf_api.observability.metrics import METRICS_PATH, Metrics, route_label
from pcf_api.observability.tracecontext import (
    current_span_id,
    current_trace_id,
    trace_id_for_request,
)
from pcf_api.observability.tracing import CurrentRequestSpan, Tracing, trace_id_of

log = get_logger(__name__)

_CREDENTIAL_HEADERS = (b"authorization", b"cookie", b"proxy-authorization")
_QUIET_PATHS = frozenset({"/health", "/health/ready", METRICS_PATH})


def error_response(
    code: ErrorCode,
    message: str,
    *,
    path: str | None = None,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON error in the service's one format, carrying the current trace id."""
    body = error_body(
        code,
        message,
        current_trace_id.get() or "",
        path=path,
        extensions=extensions,
        span_id=current_span_id(),
    )
    return Response(
        orjson.dumps(body),
        status_code=code.http_status,
        media_type="application/json",
        headers=headers,
    )


class RequestContextMiddleware:
    """Trace id, credential redaction, the access log and the HTTP metrics of every request."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics | None = None, tracing: Tracing | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        traceparent = None
        credentials = []
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name in _CREDENTIAL_HEADERS:
                credentials.extend(_credential_parts(value.decode("latin-1")))
        span = None
        current_span = None
        if self.tracing is not None and scope["type"] == "http":
            method, route = scope["method"], route_label(scope["path"])
            span = self.tracing.server_span(
                f"{method} {route}",
                scope["headers"],
                {"http.request.method": method, "http.route": route},
            )
            current_span = CurrentRequestSpan(span)
            trace_id = trace_id_of(span)  # the caller's trace, or the new one: logs match it
        else:
            trace_id = trace_id_for_request(traceparent)
        trace_token = current_trace_id.set(trace_id)
        credentials_token = request_credentials.set(tuple(credentials))
        request_log = RequestLog()
        request_log_token = current_request_log.set(request_log)
        trace_header = (b"x-trace-id", trace_id.encode())
        status = 0
        started = time.perf_counter()

        async def send_with_trace_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), trace_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace_id)
        finally:
            if scope["type"] == "http":
                elapsed = time.perf_counter() - started
                if self.metrics is not None:
                    self.metrics.observe_http(scope["method"], scope["path"], status, elapsed)
                self._log_access(scope, status, elapsed, request_log.subject)
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500 or status == 0:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
            if current_span is not None:
                current_span.close()
            current_trace_id.reset(trace_token)
            request_credentials.reset(credentials_token)
            current_request_log.reset(request_log_token)

    @staticmethod
    def _log_access(scope: Scope, status: int, elapsed: float, subject: str | None) -> None:
        """One line per request; ``client`` and ``subject`` are rendered as ``log.client_ip``
        and ``log.subject`` say (``observability.privacy``)."""
        path = scope["path"]
        quiet = path in _QUIET_PATHS and status < 500
        # Probes arrive every few seconds from every kubelet: log them at DEBUG, and skip
        # building the event at all when DEBUG is off.
        level = logging.DEBUG if quiet else logging.INFO
        if not access_log.is_enabled_for(level):
            return
        client = scope.get("client")
        fields = {
            "method": scope["method"],
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client": client[0] if client else None,
        }
        if subject is not None:
            fields["subject"] = subject
        access_log.write(level, fields)


def _credential_parts(value: str) -> list[str]:
    """The whole header value and each part of it that could appear alone in a log line."""
    parts = [value.strip()]
    scheme, _, token = value.strip().partition(" ")
    if token:
        parts.append(token.strip())
    for cookie in value.split(";"):
        _, _, cookie_value = cookie.partition("=")
        if cookie_value.strip():
            parts.append(cookie_value.strip())
    return [part for part in parts if len(part) >= 4 and part.lower() != scheme.lower()]


class ErrorBoundaryMiddleware:
    """Turns any exception into a JSON error; unexpected ones are logged and become INTERNAL_ERROR.

    Nothing of an unexpected exception reaches the client but its trace id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except AppError as exc:
            if response_started:
                raise
            response = error_response(
                exc.code,
                exc.message,
                path=scope["path"],
                extensions=exc.extensions,
                headers=exc.headers,
            )
            await response(scope, receive, send)
        except ClientDisconnect:
            # The client went away mid-request: nobody to answer, nothing broken here.
            log.info("client disconnected", path=scope["path"], method=scope["method"])
        except Exception:
            log.exception("unhandled error", path=scope["path"], method=scope["method"])
            if response_started:
                return
            code = ErrorCode.INTERNAL_ERROR
            await error_response(code, "An internal error occurred.", path=scope["path"])(
                scope, receive, send
            )


class RequestTimeoutMiddleware:
    """The outermost deadline of an HTTP request (30 s by default; GraphQL execution 25 s and a
    database statement 20 s fit inside it, so the innermost one that applies reports first).
    Past it the request is cancelled and, if nothing was sent yet, answered 504 TIMEOUT."""

    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self.app(scope, receive, send)
        except TimeoutError:
            raise AppError(
                ErrorCode.TIMEOUT,
                f"The request did not finish within {self.timeout_seconds:g} s.",
            ) from None


class BodyLimitMiddleware:
    """Refuses request bodies over the limit with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            # ASCII digits only: str.isdigit alone accepts "²", which int() then refuses.
            if not (declared.isascii() and declared.isdigit()):
                raise AppError(ErrorCode.INVALID_INPUT, "Content-Length is not a number.")
            # Compared by length first, since int() refuses numbers of over 4300 digits.
            digits = declared.lstrip("0") or "0"
            if len(digits) > len(str(self.max_body_bytes)) or int(digits) > self.max_body_bytes:
                raise self._too_large()
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> AppError:
        return AppError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The request body exceeds {self.max_body_bytes} bytes.",
            extensions={"maximum": self.max_body_bytes},
            headers={"Connection": "close"},
        )


class FaultInjectionMiddleware:
    """Delays requests to chosen paths, so tests can hold real requests in flight.

    Installed only when ``testing.delay_seconds`` is set, which configuration refuses outside
    the development profile.
    """

    def __init__(self, app: ASGIApp, delay_seconds: float, paths: Sequence[str]) -> None:
        self.app = app
        self.delay_seconds = delay_seconds
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await asyncio.sleep(self.delay_seconds)
        await self.app(scope, receive, send)
