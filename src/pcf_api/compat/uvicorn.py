"""What pcf-api takes from uvicorn beyond its published API.

uvicorn publishes ``Server(config).run()`` and ``serve()``; its shutdown on a signal is
immediate, and it re-raises the signal after a graceful stop (so the exit status is the
signal's, not 0). Kubernetes needs a drain period first and a clean exit, which only uvicorn's
undocumented ``handle_exit`` (the signal handler), ``on_tick`` (the main loop's tick) and
``startup`` methods allow. ``HookedServer`` overrides those three here and offers hooks of its
own, so that ``server.py`` uses none of uvicorn's internals.

uvicorn's httptools protocol bounds neither the size of a request's head nor the time it takes
to arrive, arms its keep-alive time-out only after a first response, and its
``limit_concurrency`` answers 503 while keeping every connection open. ``GuardedHttpToolsProtocol``
adds those limits on the protocol's parser callbacks and timers (h11 would bound the head size
only, at a higher cost per request), and lets a draining server close connections at the end of
a response instead of under a request.
"""

from __future__ import annotations

import asyncio
import http
import inspect
import socket
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from pcf_api.compat import CompatibilityError, require_version

SUPPORTED = ">=0.30,<0.55"

_OVERRIDDEN = {
    "handle_exit": ["self", "sig", "frame"],
    "on_tick": ["self", "counter"],
    "startup": ["self", "sockets"],
}
_PROTOCOL_OVERRIDDEN = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "send_400_response": ["self", "msg"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_message_complete": ["self"],
    "shutdown": ["self"],
    "timeout_keep_alive_handler": ["self"],
    "_unset_keepalive_if_required": ["self"],
}
_PROTOCOL_ATTRIBUTES = ("timeout_keep_alive_task", "timeout_keep_alive", "connections", "cycle")

# A kept-alive connection left without a request while the server drains may still be sending
# one (its bytes on the way): it is closed after this long without a byte, not at once.
DRAIN_SILENCE_SECONDS = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost the server (``server.*`` settings)."""

    max_line_bytes: int
    max_head_bytes: int
    head_timeout: float
    idle_timeout: float
    max_connections: int


class GuardedState(ServerState):
    """uvicorn's state shared by a server's connections, with their limits and the drain."""

    def __init__(self, limits: ConnectionLimits) -> None:
        super().__init__()
        self.limits = limits
        self.draining = False


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that broke a limit."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _announcing_close(cycle: Any) -> Send:
    """``cycle.send`` that adds ``Connection: close`` to a response whose connection will close.

    uvicorn 0.30 (the lowest supported) closes such a connection without saying so, and a client
    then reuses a socket the server is closing (RFC 9112 9.6); later versions add the header, and
    an answer that already carries a Connection header is left as it is. ``keep_alive`` is read
    when the response starts, so a drain that began during the request is announced as well.
    """
    send: Send = cycle.send

    async def announced(message: Any) -> None:
        if message["type"] == "http.response.start" and not cycle.keep_alive:
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return announced


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, a head and an idle time-out, a cap on
    connections and a drain that closes each connection between two requests.

    A head (request line and headers) is counted as it arrives, before httptools has buffered
    it whole, so a head that never ends costs at most the limit and one read.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(server_state, GuardedState):
            raise TypeError("GuardedHttpToolsProtocol is served by HookedServer only")
        self.guard = server_state
        self.limits = server_state.limits
        self.timeout_keep_alive = self.limits.idle_timeout  # type: ignore[assignment]
        self._draining = False
        self._answered = False  # a request has been read whole
        self._in_head = True  # no request since the last one ended
        self._head_bytes = 0  # received of the head in progress
        self._head_size = 0  # of it parsed: request line and complete headers
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: _HeadRefused | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(_HeadRefused(503, "Too many connections"))
            return
        if self.guard.draining:
            self.begin_drain()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.limits.idle_timeout, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.head_timeout, self._head_timed_out
                )
        super().data_received(data)  # a limit broken in a callback ends in send_400_response
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(_HeadRefused(431, "Request header fields too large"))

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_line_bytes:
            self._refusal = _HeadRefused(414, "URI too long")
            raise self._refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_size += size + 4  # ": " and CRLF
        if size > self.limits.max_line_bytes or (
            self._head_size + len(self.url) > self.limits.max_head_bytes
        ):
            self._refusal = _HeadRefused(431, "Request header fields too large")
            raise self._refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = False
        self._head_bytes = 0
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous and cycle is not None:
            if self._draining:
                cycle.keep_alive = False
            cycle.send = _announcing_close(cycle)  # type: ignore[method-assign,assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._answered = True
        self._in_head = True
        self._head_bytes = 0

    def begin_drain(self) -> None:
        """Close after the current response if it has not started, else after the next one;
        kept alive after a response, close if no request comes within
        ``DRAIN_SILENCE_SECONDS``. A new connection keeps its idle time-out: its first request
        is surely coming."""
        self._draining = True
        silence = min(self.limits.idle_timeout, DRAIN_SILENCE_SECONDS)
        self.timeout_keep_alive = silence  # type: ignore[assignment]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                cycle.keep_alive = False
        elif self._head_bytes == 0 and self._answered:
            self._close_if_silent(silence)

    def shutdown(self) -> None:
        # uvicorn's: the listener has closed. Unlike uvicorn, a connection between requests is
        # not closed at once: a request may be on its way.
        self.begin_drain()

    def _close_if_silent(self, seconds: float) -> None:
        timer = self.timeout_keep_alive_task
        if timer is not None:
            if timer.when() - self.loop.time() <= seconds:
                return
            timer.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(
            seconds, self.timeout_keep_alive_handler
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head: no answer can go before the response
        else:
            self._refuse(_HeadRefused(408, "Request header timeout"))

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, refusal: _HeadRefused) -> None:
        """Answer ``refusal`` and close the connection."""
        self._stop_head_timer()
        self._in_head = False
        self._refusal = None
        if self.transport.is_closing():
            return
        body = refusal.reason.encode("ascii")
        retry = b"retry-after: 1\r\n" if refusal.status == 503 else b""
        phrase = http.HTTPStatus(refusal.status).phrase.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n" % (refusal.status, phrase)
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\n" % len(body)
            + retry
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()


class HookedServer(uvicorn.Server):
    """uvicorn's server with three hooks: a signal arrived, a tick of the main loop, started;
    its HTTP connections are ``GuardedHttpToolsProtocol`` within ``limits``.

    Unlike uvicorn's own handler, a signal does not stop the server by itself and is not
    re-raised after shutdown: ``on_signal`` decides, and calls ``request_exit`` when it is time.
    """

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits) -> None:
        if config.loaded:
            raise ValueError("HookedServer chooses the HTTP protocol: pass an unloaded Config")
        config.http = GuardedHttpToolsProtocol
        super().__init__(config)
        self.guard = GuardedState(limits)
        self.server_state = self.guard

    def begin_drain(self) -> None:
        """From now on each HTTP connection closes after its next response, or when left
        without a request (call in the event loop)."""
        self.guard.draining = True
        for connection in list(self.server_state.connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection.begin_drain()

    def on_signal(self, signal_number: int) -> None:
        """A termination signal arrived (runs as a signal handler: keep it short)."""
        self.request_exit()

    async def on_loop_tick(self) -> None:
        """Called about ten times a second while the server runs."""

    def on_started(self) -> None:
        """The server has started: it listens and the application's start-up succeeded."""

    def request_exit(self, *, force: bool = False) -> None:
        """Stop accepting and shut down; ``force`` skips waiting for in-flight requests."""
        self.should_exit = True
        if force:
            self.force_exit = True

    @property
    def has_started(self) -> bool:
        return bool(self.started)

    @property
    def was_forced(self) -> bool:
        return bool(self.force_exit)

    @property
    def is_exiting(self) -> bool:
        return bool(self.should_exit)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_signal(sig)

    async def on_tick(self, counter: int) -> bool:
        await self.on_loop_tick()
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An application for the self-check's server, which never runs."""


def _check_methods(owner: type, expected: dict[str, list[str]]) -> None:
    for name, parameters in expected.items():
        method = getattr(owner, name, None)
        if method is None or list(inspect.signature(method).parameters) != parameters:
            raise CompatibilityError(
                f"uvicorn {owner.__name__}.{name} is not what compat.uvicorn overrides"
            )


def self_check() -> None:
    """Fail loudly unless the installed uvicorn still has the methods overridden here."""
    require_version("uvicorn", SUPPORTED)
    _check_methods(uvicorn.Server, _OVERRIDDEN)
    _check_methods(HttpToolsProtocol, _PROTOCOL_OVERRIDDEN)
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(app=_no_app, log_config=None)
        protocol = HttpToolsProtocol(config, ServerState(), {}, loop)
    finally:
        loop.close()
    for attribute in _PROTOCOL_ATTRIBUTES:
        if not hasattr(protocol, attribute):
            raise CompatibilityError(f"uvicorn HttpToolsProtocol has no {attribute!r}")
    server = uvicorn.Server(uvicorn.Config(app=_no_app, log_config=None))  # leaves logging alone
    for attribute in ("started", "should_exit", "force_exit"):
        if not isinstance(getattr(server, attribute, None), bool):
            raise CompatibilityError(f"uvicorn.Server has no boolean {attribute!r}")
