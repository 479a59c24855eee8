"""compat.uvicorn: the server hooks built on uvicorn's undocumented methods, the guarded HTTP
protocol's drain, checked at start-up."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pcf_api.compat import CompatibilityError
from pcf_api.compat import uvicorn as compat
from pcf_api.compat.uvicorn import DRAIN_SILENCE_SECONDS, ConnectionLimits, HookedServer
from support.rawhttp import RawConnection

LIMITS = ConnectionLimits(
    max_line_bytes=16_384,
    max_head_bytes=65_536,
    head_timeout=10.0,
    idle_timeout=30.0,
    max_connections=100,
)


async def app(scope: object, receive: object, send: object) -> None:
    """Never called: these servers are not run."""


class Recording(HookedServer):
    def __init__(self) -> None:
        super().__init__(uvicorn.Config(app=app), LIMITS)
        self.signals: list[int] = []
        self.ticks = 0

    def on_signal(self, signal_number: int) -> None:
        self.signals.append(signal_number)

    async def on_loop_tick(self) -> None:
        self.ticks += 1


def test_the_self_check_passes_on_the_installed_version() -> None:
    compat.self_check()


def test_a_signal_reaches_the_hook_and_does_not_stop_the_server_by_itself() -> None:
    server = Recording()
    server.handle_exit(signal.SIGTERM, None)
    assert server.signals == [signal.SIGTERM]
    assert not server.is_exiting


def test_the_default_hook_stops_the_server_gracefully() -> None:
    server = HookedServer(uvicorn.Config(app=app), LIMITS)
    server.handle_exit(signal.SIGTERM, None)
    assert server.is_exiting
    assert not server.was_forced


def test_request_exit_can_force() -> None:
    server = HookedServer(uvicorn.Config(app=app), LIMITS)
    server.request_exit(force=True)
    assert server.is_exiting
    assert server.was_forced


@pytest.mark.anyio
async def test_each_tick_runs_the_hook_then_uvicorn_own_tick() -> None:
    server = Recording()
    server.request_exit()
    assert await server.on_tick(0) is True  # uvicorn's own tick: exit was requested
    assert server.ticks == 1


def test_a_version_outside_the_tested_range_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pcf_api.compat.version", lambda _: "0.29.0")
    with pytest.raises(CompatibilityError, match=r"uvicorn 0\.29\.0"):
        compat.self_check()


def test_a_changed_signal_handler_signature_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle_exit(self: uvicorn.Server, sig: int) -> None: ...

    monkeypatch.setattr(uvicorn.Server, "handle_exit", handle_exit)
    with pytest.raises(CompatibilityError, match="handle_exit"):
        compat.self_check()


def test_a_changed_http_protocol_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def on_header(self: HttpToolsProtocol, header: tuple[bytes, bytes]) -> None: ...

    monkeypatch.setattr(HttpToolsProtocol, "on_header", on_header)
    with pytest.raises(CompatibilityError, match=r"HttpToolsProtocol\.on_header"):
        compat.self_check()


def test_the_server_chooses_the_protocol_before_the_config_is_loaded() -> None:
    config = uvicorn.Config(app=app, log_config=None)
    config.load()
    with pytest.raises(ValueError, match="unloaded Config"):
        HookedServer(config, LIMITS)


def test_the_self_check_leaves_logging_as_the_service_configured_it() -> None:
    # uvicorn.Config applies uvicorn's own logging configuration unless told not to; the
    # service's JSON pipeline must survive the check.
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    before = [(list(logger.handlers), logger.propagate) for logger in loggers]
    compat.self_check()
    assert [(list(logger.handlers), logger.propagate) for logger in loggers] == before


class _Gate:
    """An application whose ``/slow`` responses wait for the test to open the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            self.entered.set()
            await self.opened.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _serving(application: _Gate) -> AsyncIterator[tuple[HookedServer, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(application, lifespan="off", log_config=None, loop="asyncio")
    server = HookedServer(config, LIMITS)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.has_started:
        await asyncio.sleep(0.01)
    try:
        yield server, sock.getsockname()[1]
    finally:
        application.opened.set()
        server.request_exit()
        await serving
        sock.close()


@pytest.mark.anyio
async def test_a_request_in_progress_when_the_drain_begins_is_answered_with_connection_close() -> (
    None
):
    gate = _Gate()
    async with _serving(gate) as (server, port):
        connection = await RawConnection.open(port)
        reply = asyncio.ensure_future(connection.request("/slow"))
        await gate.entered.wait()
        server.begin_drain()
        gate.opened.set()
        assert (await reply).closes
        assert await connection.read_until_closed(timeout=2) == b""


@pytest.mark.anyio
async def test_an_idle_connection_may_still_send_a_request_which_is_answered_with_close() -> None:
    async with _serving(_Gate()) as (server, port):
        connection = await RawConnection.open(port)
        assert not (await connection.request()).closes
        server.begin_drain()
        reply = await connection.request()
        assert (reply.status, reply.closes) == (200, True)


@pytest.mark.anyio
async def test_a_connection_left_idle_in_the_drain_closes_after_a_second_of_silence() -> None:
    async with _serving(_Gate()) as (server, port):
        connection = await RawConnection.open(port)
        await connection.request()
        loop = asyncio.get_running_loop()
        drained = loop.time()
        server.begin_drain()
        assert await connection.read_until_closed(timeout=DRAIN_SILENCE_SECONDS + 2) == b""
        assert loop.time() - drained >= DRAIN_SILENCE_SECONDS - 0.05


@pytest.mark.anyio
async def test_a_connection_opened_during_the_drain_gets_connection_close_on_its_response() -> None:
    async with _serving(_Gate()) as (server, port):
        server.begin_drain()
        connection = await RawConnection.open(port)
        assert (await connection.request()).closes


@pytest.mark.anyio
async def test_after_the_listener_closes_a_request_already_on_its_way_is_still_served() -> None:
    gate = _Gate()
    async with _serving(gate) as (server, port):
        connection = await RawConnection.open(port)
        await connection.request()
        busy = await RawConnection.open(port)  # keeps the server in its shutdown a while
        slow = asyncio.ensure_future(busy.request("/slow"))
        await gate.entered.wait()
        server.request_exit()
        await asyncio.sleep(0.3)  # uvicorn has closed the listener and told each connection
        reply = await connection.request()
        gate.opened.set()
        assert (reply.status, reply.closes) == (200, True)
        assert (await slow).status == 200
