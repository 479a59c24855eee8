"""Process lifecycle: bind, serve, drain on SIGTERM/SIGINT, shut down gracefully, say why it exits.

Shutdown sequence, as Kubernetes needs it:

1. the signal arrives: readiness answers 503 at once, requests are still served, but each
   response says ``Connection: close`` and ends its connection, and a connection kept alive
   after an earlier response is closed after a second of silence, so that no client sends a
   request on a connection about to go;
2. after ``server.drain_seconds`` (load balancers have stopped routing here) the kernel is told
   to ignore new connection attempts, the connections it had already queued are accepted, and a
   tick later the listener closes, so new connections are refused (closing a listener resets
   the connections still in its queue, with their requests already sent);
3. in-flight requests finish, for at most ``server.shutdown_timeout`` seconds;
4. the application's shutdown runs (background tasks stop, telemetry is flushed);
5. the reason is logged and the process exits 0.
"""

from __future__ import annotations

import array
import asyncio
import gc
import math
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable

import uvicorn

from pcf_api.compat.uvicorn import ConnectionLimits, HookedServer
from pcf_api.composition import build_service
from pcf_api.config import Settings
from pcf_api.health import HealthRegistry
from pcf_api.observability.logging import get_logger

log = get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1

_SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
_DROP_EVERY_PACKET = struct.pack("HBBI", 0x06, 0, 0, 0)  # classic BPF: BPF_RET | BPF_K, 0


class DrainingServer(HookedServer):
    """uvicorn's server with a drain period between the signal and closing the listener."""

    def __init__(
        self,
        config: uvicorn.Config,
        limits: ConnectionLimits,
        *,
        health: HealthRegistry,
        drain_seconds: float,
        gc_young_threshold: int,
        before_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config, limits)
        self.health = health
        self.drain_seconds = drain_seconds
        self.before_close = before_close
        self.gc_young_threshold = gc_young_threshold
        self.exit_signal: str | None = None
        self._drain_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[socket.socket] = []
        self._ignoring_new_connections = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._listeners = list(sockets or [])
        await super().serve(sockets)

    def on_started(self) -> None:
        if self.gc_young_threshold > 0:  # 0: as Python sets it
            frozen = settle_garbage_collector(self.gc_young_threshold)
            log.info(
                "garbage collector settled",
                frozen_objects=frozen,
                young_threshold=self.gc_young_threshold,
            )

    def on_signal(self, signal_number: int) -> None:
        # Runs as a signal handler: flip readiness, then leave logging to the event loop.
        name = signal.Signals(signal_number).name
        if self.exit_signal is None:
            self.exit_signal = name
            self.health.begin_shutdown()
            self._drain_until = time.monotonic() + self.drain_seconds
            self._call_in_loop(self.begin_drain)
            self._call_in_loop(self._log_drain_start)
        else:
            self.request_exit(force=True)
            self._call_in_loop(self._log_forced, name)

    def _call_in_loop(self, callback: object, *args: object) -> None:
        if self._loop is not None and callable(callback):
            self._loop.call_soon_threadsafe(callback, *args)

    def _log_drain_start(self) -> None:
        log.info(
            "shutdown requested; draining",
            signal=self.exit_signal,
            drain_seconds=self.drain_seconds,
        )

    def _log_forced(self, name: str) -> None:
        log.error("second signal; forcing exit without waiting for requests", signal=name)

    async def on_loop_tick(self) -> None:
        if not self.exit_signal or self.is_exiting or time.monotonic() < self._drain_until:
            return
        if self._ignoring_new_connections:
            self.request_exit()  # a tick later: the queued connections have been accepted
            return
        log.info("drain finished; closing the listener", signal=self.exit_signal)
        if self.before_close is not None:
            await self.before_close()
        for listener in self._listeners:
            ignore_new_connections(listener)
        self._ignoring_new_connections = True


def connection_limits(settings: Settings) -> ConnectionLimits:
    """What one HTTP connection may cost, from the ``server.*`` settings."""
    server = settings.server
    return ConnectionLimits(
        max_line_bytes=server.max_header_line_bytes,
        max_head_bytes=server.max_header_bytes,
        head_timeout=server.header_timeout_seconds,
        idle_timeout=server.idle_timeout_seconds,
        max_connections=server.max_connections,
    )


def settle_garbage_collector(young_threshold: int) -> int:
    """Take what start-up made out of the cyclic garbage collector's way; return how many
    objects that is.

    Each request leaves reference cycles (graphql-core's execution state refers to itself),
    which only the cyclic collector frees. With Python's defaults it runs every 700
    allocations, several times a request, and every hundredth run walks every object in the
    process: the ≈ 190 000 that imports and start-up made, ≈ 80 ms each time under load,
    measured (docs/benchmarks.md). Frozen, those objects are never walked again (they live as
    long as the process anyway); a larger young threshold lets a request's short-lived objects
    die before a collection would promote them.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return gc.get_freeze_count()


def ignore_new_connections(listener: socket.socket) -> bool:
    """Have the kernel drop every packet to ``listener`` (Linux; false elsewhere or if refused).

    A connection attempt then goes unanswered and, retried a second later, meets the closed
    port (refused), instead of completing into the accept queue just before the close resets
    it. Connections already queued or accepted are separate sockets and are not affected.
    """
    if not sys.platform.startswith("linux"):
        return False
    # The image leaves ctypes out: an array's buffer gives the program's address as well.
    program = array.array("B", _DROP_EVERY_PACKET)
    address, _ = program.buffer_info()
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: copied by the kernel
    fprog = struct.pack("HP", 1, address)
    try:
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts so a taken port is reported plainly, once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(settings: Settings, *, version: str) -> int:
    """Serve until a signal or a failure; return the process exit code."""
    try:
        service = build_service(settings)
    except Exception:
        log.critical("start-up failed", exc_info=True)
        return EXIT_FAILURE
    host, port = settings.server.host, settings.server.port
    sockets: list[socket.socket] = []
    # The metrics port, when set, is served by the same server: the app tells the ports apart.
    for wanted in (port, settings.metrics.port):
        if wanted is None:
            continue
        try:
            sockets.append(bind_socket(host, wanted))
        except OSError as exc:
            log.critical(
                "cannot listen", host=host, port=wanted, reason=exc.strerror, errno=exc.errno
            )
            for bound in sockets:
                bound.close()
            return EXIT_FAILURE

    config = uvicorn.Config(
        service.app,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.server.shutdown_timeout),
        ws_max_size=1_048_576,  # subscription messages are capped at 1 MiB
    )
    server = DrainingServer(
        config,
        connection_limits(settings),
        health=service.health,
        drain_seconds=settings.server.drain_seconds,
        before_close=service.before_close,
        gc_young_threshold=settings.server.gc_young_threshold,
    )
    log.info(
        "listening",
        host=host,
        port=port,
        metrics_port=settings.metrics.port,
        environment=settings.environment,
        version=version,
    )
    try:
        server.run(sockets=sockets)
    except SystemExit:
        log.critical("start-up failed; see the error above", host=host, port=port)
        return EXIT_FAILURE
    except Exception:
        log.critical("server failed", exc_info=True)
        return EXIT_FAILURE
    finally:
        for bound in sockets:
            bound.close()

    return exit_code(server, host=host, port=port)


def exit_code(server: DrainingServer, *, host: str, port: int) -> int:
    """Log why the server stopped and pick the exit code.

    A function of its own so it runs in a fresh frame: coverage.py's tracer loses the frame
    that was suspended across uvicorn's run, and these lines must stay measured.
    """
    if not server.has_started:
        log.critical("start-up failed; see the error above", host=host, port=port)
        return EXIT_FAILURE
    if server.was_forced:
        log.error(
            "stopped without waiting for in-flight requests",
            signal=server.exit_signal,
            exit_code=EXIT_FAILURE,
        )
        return EXIT_FAILURE
    reason = f"received {server.exit_signal}" if server.exit_signal else "server loop ended"
    log.info("stopped", reason=reason, signal=server.exit_signal, exit_code=EXIT_OK)
    return EXIT_OK
