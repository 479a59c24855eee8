"""The ASGI application from ``create_app``, driven in-process (spec: app.py, middleware.py).

Every request runs inside the application's lifespan, through the real middleware stack:
request context → error boundary → body limit → fault injection (tests only) → routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pcf_api import __version__
from pcf_api.app import ServiceApp
from pcf_api.composition import build_service
from pcf_api.config import ServerSettings, Settings
from pcf_api.config import TestingSettings as FaultSettings
from pcf_api.errors import AppError, ErrorCode
from pcf_api.health import HealthRegistry
from pcf_api.middleware import (
    BodyLimitMiddleware,
    ErrorBoundaryMiddleware,
    FaultInjectionMiddleware,
    RequestContextMiddleware,
    RequestTimeoutMiddleware,
)
from pcf_api.observability.logging import get_logger
from support.logs import LogCapture, capture_logs

pytestmark = pytest.mark.anyio

HEX32 = re.compile(r"^[0-9a-f]{32}$")
ISO_UTC_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
MAX_BODY = 1024  # the smallest limit the settings allow


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The service's real JSON logging pipeline, written to a buffer."""
    with capture_logs() as capture:
        yield capture


def dev_settings(**overrides: Any) -> Settings:
    overrides.setdefault("server", ServerSettings(max_body_bytes=MAX_BODY))
    return Settings(environment="development", **overrides)


def service_app(settings: Settings, *, health: HealthRegistry | None = None) -> ServiceApp:
    """The application as the composition root builds it for ``settings``."""
    return build_service(settings, health=health).app


def middleware_classes(app: ServiceApp) -> list[object]:
    """The classes of the app's middleware, outermost first (starlette types ``Middleware.cls``
    as a factory protocol, which mypy will not compare with a class)."""
    return [middleware.cls for middleware in app.user_middleware]


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run the ASGI lifespan protocol through the whole middleware stack, as a server does."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, to_app.get, from_app.put)

    task = asyncio.create_task(run())
    await to_app.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(from_app.get(), timeout=5)
    assert message["type"] == "lifespan.startup.complete", message
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(from_app.get(), timeout=5)
        assert message["type"] == "lifespan.shutdown.complete", message
        await asyncio.wait_for(task, timeout=5)


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


async def raw_request(
    app: ASGIApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: list[bytes] | None = None,
    *,
    disconnect: bool = False,
) -> list[Message]:
    """One request at the ASGI level, for what httpx cannot send; returns what the app sent.

    With ``disconnect`` the client goes away after the last chunk instead of ending the body.
    """
    chunks = list(body or [b""])
    sent: list[Message] = []

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": disconnect or bool(chunks)}
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


def start_of(messages: list[Message]) -> tuple[int, dict[str, str]]:
    (start,) = [m for m in messages if m["type"] == "http.response.start"]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def assert_error(response: httpx.Response, status: int, code: str, path: str) -> dict[str, Any]:
    """The one error shape: {"error": {code, message, trace_id, timestamp, path, ...}}."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"code", "message", "trace_id", "timestamp", "path"} <= set(error)
    assert error["code"] == code
    assert error["message"]
    assert error["path"] == path
    assert ISO_UTC_MILLIS.match(error["timestamp"])
    assert HEX32.match(error["trace_id"])
    assert error["trace_id"] == response.headers["x-trace-id"]
    return error


async def wait_for_report(
    client: httpx.AsyncClient, condition: Any, within: float = 5
) -> httpx.Response:
    """Poll readiness until ``condition(report)`` holds (or ``within`` seconds pass)."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get("/health/ready")
        if condition(response.json()) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.02)


async def ok() -> None:
    return None


async def failing() -> None:
    raise ConnectionError("db.internal:5432 refused")


async def hangs() -> None:
    await asyncio.Event().wait()


def registry(timeout: float = 2.0) -> HealthRegistry:
    return HealthRegistry(version=__version__, interval=0.05, timeout=timeout)


async def boom(_: Request) -> Response:
    raise RuntimeError("password=hunter2 at /srv/pcf_api/secret_module.py host=db.internal")


async def app_error(_: Request) -> Response:
    raise AppError(
        ErrorCode.CONFLICT,
        "That title is taken.",
        extensions={"field": "title"},
        headers={"X-Hint": "rename"},
    )


def app_with(*routes: Route, settings: Settings | None = None, **kwargs: Any) -> Starlette:
    """The real application with extra test routes appended to its router."""
    app = service_app(settings or dev_settings(), **kwargs)
    app.router.routes.extend(routes)
    return app


async def echo_length(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {"received": len(body), "content_length": request.headers.get("content-length")}
    )


def body_reading_app(max_body_bytes: int = MAX_BODY) -> Starlette:
    """A route that reads the body, behind the service's own middleware in the service's order."""
    return Starlette(
        routes=[Route("/echo", echo_length, methods=["POST"])],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(ErrorBoundaryMiddleware),
            Middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes),
        ],
    )


async def chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


# --- liveness, readiness, version ------------------------------------------------------------


async def test_liveness_is_plain_ok() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "OK"
    assert "no-cache" in response.headers["cache-control"]


async def test_liveness_ignores_dependencies() -> None:
    health = registry()
    health.register("database", failing, critical=True)
    async with serve(service_app(dev_settings(), health=health)) as client:
        await wait_for_report(client, lambda r: r["status"] == "unhealthy")
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.text == "OK"


async def test_liveness_answers_head() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.head("/health")
    assert response.status_code == 200


async def test_readiness_is_json_not_cached_and_healthy_with_no_checks() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "no-cache" in response.headers["cache-control"]
    report = response.json()
    assert report["status"] == "healthy"
    assert report["version"] == __version__
    assert report["services"] == {}
    assert ISO_UTC_MILLIS.match(report["timestamp"])
    assert report["uptime_seconds"] >= 0


async def test_readiness_uses_the_health_settings() -> None:
    settings = dev_settings().model_copy(
        update={"health": dev_settings().health.model_copy(update={"check_timeout_seconds": 0.1})}
    )
    service = build_service(settings)
    service.health.register("database", hangs, critical=True)
    async with serve(service.app) as client:
        began = time.monotonic()
        response = await wait_for_report(
            client, lambda r: r["services"]["database"]["status"] == "down"
        )
        assert time.monotonic() - began < 1.5  # the 0.1 s timeout, not the 2 s default
    assert response.json()["services"]["database"]["failure"] == "timeout"


async def test_readiness_is_503_starting_until_every_check_has_run() -> None:
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    health = registry(timeout=4)
    health.register("database", slow, critical=True)
    async with serve(service_app(dev_settings(), health=health)) as client:
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert "no-cache" in response.headers["cache-control"]
        assert response.json()["status"] == "starting"
        assert response.json()["services"]["database"] == {"status": "unknown", "critical": True}

        gate.set()
        response = await wait_for_report(client, lambda r: r["status"] != "starting")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert response.json()["services"]["database"]["status"] == "up"


async def test_readiness_is_503_when_a_critical_check_is_down() -> None:
    health = registry()
    health.register("database", failing, critical=True)
    health.register("cache", ok, critical=False)
    async with serve(service_app(dev_settings(), health=health)) as client:
        response = await wait_for_report(client, lambda r: r["status"] != "starting")
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "unhealthy"
    assert report["services"]["database"]["status"] == "down"
    assert report["services"]["database"]["failure"] == "error"
    assert "db.internal" not in response.text


async def test_readiness_is_200_degraded_when_only_a_non_critical_check_is_down() -> None:
    health = registry()
    health.register("database", ok, critical=True)
    health.register("cache", failing, critical=False)
    async with serve(service_app(dev_settings(), health=health)) as client:
        response = await wait_for_report(client, lambda r: r["status"] != "starting")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"


async def test_readiness_never_waits_on_a_hanging_check() -> None:
    health = registry(timeout=0.3)
    health.register("database", hangs, critical=True)
    async with serve(service_app(dev_settings(), health=health)) as client:
        began = time.monotonic()
        first = await client.get("/health/ready")
        assert time.monotonic() - began < 5
        assert time.monotonic() - began < 0.3  # answered before the check even timed out
        assert first.status_code == 503
        assert first.json()["services"]["database"]["status"] == "unknown"

        response = await wait_for_report(
            client, lambda r: r["services"]["database"]["status"] == "down"
        )
        elapsed = time.monotonic() - began
    assert elapsed < 5
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["services"]["database"]["failure"] == "timeout"


async def test_readiness_is_503_with_a_message_when_shutting_down() -> None:
    health = registry()
    async with serve(service_app(dev_settings(), health=health)) as client:
        assert (await client.get("/health/ready")).status_code == 200
        health.begin_shutdown()
        response = await client.get("/health/ready")
        live = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["message"] == "shutting down"
    assert live.status_code == 200  # still alive while draining


async def test_lifespan_starts_and_stops_the_checks(logs: LogCapture) -> None:
    calls = 0
    repeated = asyncio.Event()

    async def counted() -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            repeated.set()

    health = registry()
    health.register("database", counted, critical=True)
    app = service_app(dev_settings(), health=health)
    async with lifespan(app):
        await asyncio.wait_for(repeated.wait(), timeout=3)  # repeats on the interval
    stopped_at = calls
    await asyncio.sleep(0.2)
    assert calls == stopped_at  # the background task is gone after shutdown
    (started,) = logs.find("application started")
    assert started["level"] == "INFO"
    assert started["environment"] == "development"
    assert started["version"] == __version__
    assert logs.find("application stopped")


async def test_version() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/version")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": "pcf-api", "version": __version__}


# --- router errors -------------------------------------------------------------------------


async def test_unknown_route_is_404_in_the_error_format() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/no/such/thing")
    error = assert_error(response, 404, "NOT_FOUND", "/no/such/thing")
    assert error["message"] == "Not found."
    assert set(error) == {"code", "message", "trace_id", "timestamp", "path"}


async def test_wrong_method_is_405_with_allow() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.post("/health", content=b"")
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED", "/health")
    assert error["message"] == "This method is not allowed here."
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}


async def test_wrong_method_on_version_lists_its_methods() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.delete("/version")
    assert_error(response, 405, "METHOD_NOT_ALLOWED", "/version")
    assert "GET" in response.headers["allow"]
    assert "DELETE" not in response.headers["allow"]


# --- body limit ----------------------------------------------------------------------------


async def test_body_over_the_limit_by_content_length_is_413() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.post("/health", content=b"x" * (MAX_BODY + 1))
    # Refused before routing: not a 405 even though /health takes no POST.
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE", "/health")
    assert error["extensions"] == {"maximum": MAX_BODY}
    assert str(MAX_BODY) in error["message"]
    assert response.headers["connection"] == "close"


async def test_body_at_the_limit_by_content_length_passes() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.post("/health", content=b"x" * MAX_BODY)
    assert response.status_code == 405  # reaches the router


async def test_body_limit_follows_the_setting() -> None:
    settings = dev_settings(server=ServerSettings(max_body_bytes=4096))
    async with serve(service_app(settings)) as client:
        passes = await client.post("/health", content=b"x" * 4096)
        refused = await client.post("/health", content=b"x" * 4097)
    assert passes.status_code == 405
    error = assert_error(refused, 413, "PAYLOAD_TOO_LARGE", "/health")
    assert error["extensions"] == {"maximum": 4096}


async def test_streamed_body_over_the_limit_is_413() -> None:
    app = body_reading_app()
    async with serve(app) as client:
        response = await client.post("/echo", content=chunks(4, 512))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE", "/echo")
    assert error["extensions"] == {"maximum": MAX_BODY}
    assert response.headers["connection"] == "close"


async def test_streamed_body_within_the_limit_is_read_whole() -> None:
    app = body_reading_app()
    async with serve(app) as client:
        response = await client.post("/echo", content=chunks(4, 256))
    assert response.status_code == 200
    assert response.json() == {"received": MAX_BODY, "content_length": None}


async def test_body_longer_than_its_content_length_is_413() -> None:
    # A client that declares a small body and then sends more is stopped while streaming.
    sent = await raw_request(
        body_reading_app(),
        "POST",
        "/echo",
        headers=[(b"content-length", b"10")],
        body=[b"x" * 1000, b"x" * 1000],
    )
    status, headers = start_of(sent)
    assert status == 413
    assert json.loads(body_of(sent))["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert HEX32.match(headers["x-trace-id"])


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"1e3", b"", b" ", b"0x10"])
async def test_invalid_content_length_is_400(value: bytes) -> None:
    sent = await raw_request(
        service_app(dev_settings()), "POST", "/health", headers=[(b"content-length", value)]
    )
    status, headers = start_of(sent)
    assert status == 400
    error = json.loads(body_of(sent))["error"]
    assert error["code"] == "INVALID_INPUT"
    assert error["message"] == "Content-Length is not a number."
    assert error["trace_id"] == headers["x-trace-id"]


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b3"])  # superscript digits, in latin-1
async def test_non_ascii_digits_in_content_length_are_400_not_500(value: str) -> None:
    sent = await raw_request(
        service_app(dev_settings()),
        "POST",
        "/health",
        headers=[(b"content-length", value.encode("latin-1"))],
    )
    status, _ = start_of(sent)
    assert status == 400
    assert json.loads(body_of(sent))["error"]["code"] == "INVALID_INPUT"


async def test_huge_content_length_is_413_not_500() -> None:
    # int() refuses decimal strings of more than 4300 digits; this is still just "too large".
    sent = await raw_request(
        service_app(dev_settings()), "POST", "/health", headers=[(b"content-length", b"9" * 5000)]
    )
    status, _ = start_of(sent)
    assert status == 413
    assert json.loads(body_of(sent))["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_leading_zeros_in_content_length_are_just_a_number() -> None:
    app = service_app(dev_settings())
    small = await raw_request(app, "POST", "/health", [(b"content-length", b"0" * 5000 + b"5")])
    large = await raw_request(app, "POST", "/health", [(b"content-length", b"0" * 30 + b"1025")])
    assert start_of(small)[0] == 405  # within the limit: reaches the router
    assert start_of(large)[0] == 413


async def test_invalid_content_length_via_httpx() -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.post("/health", content=b"abc", headers={"Content-Length": "three"})
    error = assert_error(response, 400, "INVALID_INPUT", "/health")
    assert error["message"] == "Content-Length is not a number."


# --- unexpected errors ---------------------------------------------------------------------


async def test_unexpected_exception_is_a_generic_500(logs: LogCapture) -> None:
    app = app_with(Route("/boom", boom))
    async with serve(app) as client:
        response = await client.get("/boom")
    error = assert_error(response, 500, "INTERNAL_ERROR", "/boom")
    assert error["message"] == "An internal error occurred."
    assert set(error) == {"code", "message", "trace_id", "timestamp", "path"}
    for leak in ("RuntimeError", "hunter2", "password", "secret_module", "/srv", "db.internal"):
        assert leak not in response.text
    assert "Traceback" not in response.text
    assert ".py" not in response.text

    # The details are in the log, under the same trace id.
    (line,) = logs.find("unhandled error")
    assert line["level"] == "ERROR"
    assert line["trace_id"] == error["trace_id"]
    assert line["path"] == "/boom"
    assert line["method"] == "GET"
    assert "RuntimeError" in line["exception"]
    assert "db.internal" in line["exception"]


async def test_unexpected_exception_in_a_sync_route_is_a_500() -> None:
    def sync_boom(_: Request) -> Response:
        raise KeyError("internal")

    app = app_with(Route("/sync-boom", sync_boom))
    async with serve(app) as client:
        response = await client.get("/sync-boom")
    assert_error(response, 500, "INTERNAL_ERROR", "/sync-boom")
    assert "internal'" not in response.text


async def test_app_error_in_a_route_keeps_its_code_message_extensions_and_headers() -> None:
    app = app_with(Route("/taken", app_error))
    async with serve(app) as client:
        response = await client.get("/taken")
    error = assert_error(response, 409, "CONFLICT", "/taken")
    assert error["message"] == "That title is taken."
    assert error["extensions"] == {"field": "title"}
    assert response.headers["x-hint"] == "rename"


async def test_exception_after_the_response_started_is_logged_not_answered_twice(
    logs: LogCapture,
) -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("mid-stream failure")

    async def streaming(_: Request) -> Response:
        return StreamingResponse(stream(), media_type="text/plain")

    app = app_with(Route("/stream", streaming))
    sent = await raw_request(app, "GET", "/stream")
    status, _ = start_of(sent)
    assert status == 200  # the one response start; no second (error) response
    assert b"partial" in body_of(sent)
    assert b"INTERNAL_ERROR" not in body_of(sent)
    (line,) = logs.find("unhandled error")
    assert line["path"] == "/stream"
    assert "mid-stream failure" in line["exception"]


async def test_app_error_after_the_response_started_propagates() -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield b"partial"
        raise AppError(ErrorCode.CONFLICT)

    async def streaming(_: Request) -> Response:
        return StreamingResponse(stream(), media_type="text/plain")

    app = app_with(Route("/stream", streaming))
    with pytest.raises(AppError):
        await raw_request(app, "GET", "/stream")


# --- trace ids and access log --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/version"),
        ("GET", "/missing"),
        ("POST", "/version"),
        ("HEAD", "/health"),
    ],
)
async def test_every_response_has_a_trace_id(method: str, path: str) -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.request(method, path)
    assert HEX32.match(response.headers["x-trace-id"])
    assert len(response.headers.get_list("x-trace-id")) == 1


async def test_each_request_gets_its_own_trace_id() -> None:
    async with serve(service_app(dev_settings())) as client:
        ids = {(await client.get("/health")).headers["x-trace-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_error_responses_carry_the_header_trace_id() -> None:
    async with serve(app_with(Route("/boom", boom))) as client:
        for path in ("/missing", "/boom"):
            response = await client.get(path)
            assert response.json()["error"]["trace_id"] == response.headers["x-trace-id"]


async def test_a_valid_traceparent_is_honoured() -> None:
    async with serve(service_app(dev_settings())) as client:
        ok_response = await client.get("/health", headers={"traceparent": TRACEPARENT})
        error_response = await client.get("/missing", headers={"traceparent": TRACEPARENT})
    assert ok_response.headers["x-trace-id"] == TRACE_ID
    assert error_response.headers["x-trace-id"] == TRACE_ID
    assert error_response.json()["error"]["trace_id"] == TRACE_ID


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # forbidden version
        f"00-{TRACE_ID}",  # bad format
        "not a traceparent",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
    ],
)
async def test_an_invalid_traceparent_gets_a_fresh_trace_id(traceparent: str) -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/missing", headers={"traceparent": traceparent})
    trace_id = response.headers["x-trace-id"]
    assert HEX32.match(trace_id)
    assert trace_id not in {TRACE_ID, "0" * 32}
    assert response.json()["error"]["trace_id"] == trace_id


async def test_route_logs_carry_the_request_trace_id(logs: LogCapture) -> None:
    route_log = get_logger("tests.route")

    async def logs_something(_: Request) -> Response:
        route_log.info("inside the route")
        return Response("done")

    app = app_with(Route("/logs", logs_something))
    async with serve(app) as client:
        response = await client.get("/logs", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    (line,) = logs.find("inside the route")
    assert line["trace_id"] == TRACE_ID


async def test_access_log_line_per_request(logs: LogCapture) -> None:
    async with serve(service_app(dev_settings())) as client:
        response = await client.get("/version", headers={"traceparent": TRACEPARENT})
        await client.get("/missing")
    (line,) = logs.find("request", path="/version")
    assert line["level"] == "INFO"
    assert line["module"] == "pcf_api.access"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["trace_id"] == TRACE_ID == response.headers["x-trace-id"]
    assert line["client"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    (missing,) = logs.find("request", path="/missing")
    assert missing["status"] == 404


async def test_probe_paths_are_logged_only_at_debug(logs: LogCapture) -> None:
    async with serve(service_app(dev_settings())) as client:
        await client.get("/health")
        await client.get("/health/ready")
    assert logs.find("request", path="/health") == []
    assert logs.find("request", path="/health/ready") == []

    logging.getLogger().setLevel(logging.DEBUG)
    async with serve(service_app(dev_settings())) as client:
        await client.get("/health")
    (line,) = logs.find("request", path="/health")
    assert line["level"] == "DEBUG"


async def test_probe_path_failures_are_logged_at_info(logs: LogCapture) -> None:
    health = registry()
    health.register("database", failing, critical=True)
    async with serve(service_app(dev_settings(), health=health)) as client:
        await wait_for_report(client, lambda r: r["status"] == "unhealthy")
    lines = logs.find("request", path="/health/ready", status=503)
    assert lines
    assert all(line["level"] == "INFO" for line in lines)


@pytest.mark.parametrize(
    ("header", "value", "secret"),
    [
        ("authorization", "Bearer abc.def-token-123", "abc.def-token-123"),
        ("authorization", "Token s3cr3t-t0ken", "s3cr3t-t0ken"),
        ("cookie", "session=sess-0123456789; theme=dark", "sess-0123456789"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ],
)
async def test_request_credentials_never_reach_the_logs(
    logs: LogCapture, header: str, value: str, secret: str
) -> None:
    route_log = get_logger("tests.route")

    async def careless(request: Request) -> Response:
        # A route that logs what it should not: the scrubber must catch it.
        route_log.info("handling", raw=request.headers[header])
        raise RuntimeError(f"failed for {request.headers[header]}")

    app = app_with(Route("/careless", careless))
    async with serve(app) as client:
        response = await client.get("/careless", headers={header: value})
    assert response.status_code == 500
    assert logs.find("handling")
    assert logs.find("unhandled error")
    assert secret not in logs.text()


async def test_credentials_do_not_leak_into_the_next_request(logs: LogCapture) -> None:
    route_log = get_logger("tests.route")

    async def echo(request: Request) -> Response:
        route_log.info("echo", value=request.query_params["v"])
        return Response("ok")

    app = app_with(Route("/echo", echo))
    async with serve(app) as client:
        await client.get(
            "/echo?v=first-secret-value", headers={"authorization": "first-secret-value"}
        )
        await client.get("/echo?v=first-secret-value")
    (_, second) = logs.find("echo")
    assert second["value"] == "first-secret-value"  # not redacted: no credential this time


# --- fault injection -----------------------------------------------------------------------


async def test_fault_injection_delays_only_the_configured_paths() -> None:
    settings = dev_settings(testing=FaultSettings(delay_seconds=0.4, delay_paths=["/version"]))
    async with serve(service_app(settings)) as client:
        began = time.monotonic()
        delayed = await client.get("/version")
        delayed_for = time.monotonic() - began

        began = time.monotonic()
        prompt = await client.get("/health")
        prompt_for = time.monotonic() - began
    assert delayed.status_code == 200
    assert delayed.json()["version"] == __version__
    assert delayed_for >= 0.4
    assert prompt.status_code == 200
    assert prompt_for < 0.2


async def test_fault_injection_is_off_by_default() -> None:
    app = service_app(dev_settings())
    assert FaultInjectionMiddleware not in middleware_classes(app)
    async with serve(app) as client:
        began = time.monotonic()
        await client.get("/version")
    assert time.monotonic() - began < 0.2


async def test_middleware_order() -> None:
    settings = dev_settings(testing=FaultSettings(delay_seconds=0.1, delay_paths=["/x"]))
    app = service_app(settings)
    assert middleware_classes(app) == [
        RequestContextMiddleware,
        ErrorBoundaryMiddleware,
        RequestTimeoutMiddleware,
        BodyLimitMiddleware,
        FaultInjectionMiddleware,
    ]


async def test_delayed_requests_still_get_trace_ids_and_errors() -> None:
    settings = dev_settings(testing=FaultSettings(delay_seconds=0.05, delay_paths=["/nope"]))
    async with serve(service_app(settings)) as client:
        response = await client.get("/nope")
    assert_error(response, 404, "NOT_FOUND", "/nope")


# --- other ASGI traffic --------------------------------------------------------------------


class RawReader:
    """An ASGI endpoint that reads the body message by message until it ends or the client goes."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.seen.append(message["type"])
            self.received += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await Response("bye")(scope, receive, send)


async def test_body_limit_passes_a_disconnect_through() -> None:
    reader = RawReader()
    app = Starlette(
        routes=[Route("/raw", reader, methods=["POST"])],
        middleware=[Middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY)],
    )
    sent = await raw_request(app, "POST", "/raw", body=[b"x" * 512, b"x" * 512], disconnect=True)
    assert reader.seen == ["http.request", "http.request", "http.disconnect"]
    assert reader.received == MAX_BODY
    assert start_of(sent)[0] == 200


async def test_websocket_to_an_unknown_path_is_closed_without_an_access_log(
    logs: LogCapture,
) -> None:
    app = service_app(dev_settings())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"traceparent", TRACEPARENT.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert logs.find("request") == []


class BodyReader:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive).body()
        await Response("read")(scope, receive, send)


async def test_a_client_that_disconnects_mid_body_gets_no_500_and_is_logged_at_info(
    logs: LogCapture,
) -> None:
    app = Starlette(
        routes=[Route("/read", BodyReader(), methods=["POST"])],
        middleware=[Middleware(RequestContextMiddleware), Middleware(ErrorBoundaryMiddleware)],
    )
    sent = await raw_request(app, "POST", "/read", body=[b"x" * 10], disconnect=True)
    assert [m for m in sent if m["type"] == "http.response.start"] == []
    lines = logs.records()
    from_boundary = [line for line in lines if line["module"] == "pcf_api.middleware"]
    assert [(line["level"], line["message"]) for line in from_boundary] == [
        ("INFO", "client disconnected")
    ]
