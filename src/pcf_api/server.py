"""Process lifecycle: bind, serve, drain on SIGTERM/SIGINT, shut down gracefully, say why it exits.

Shutdown sequence, as Kubernetes needs it:

1. the signal arrives: readiness answers 503 at once, requests are still served;
2. after ``server.drain_seconds`` (load balancers have stopped routing here) the listener closes,
   so new connections are refused;
3. in-flight requests finish, for at most ``server.shutdown_timeout`` seconds;
4. the application's shutdown runs (background tasks stop, telemetry is flushed);
5. the reason is logged and the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import math
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import uvicorn

from pcf_api.compat.uvicorn import HookedServer
from pcf_api.composition import build_service
from pcf_api.config import Settings
from pcf_api.health import HealthRegistry
from pcf_api.observability.logging import get_logger

log = get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1


class DrainingServer(HookedServer):
    """uvicorn's server with a drain period between the signal and closing the listener."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        health: HealthRegistry,
        drain_seconds: float,
        gc_young_threshold: int,
        before_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self.health = health
        self.drain_seconds = drain_seconds
        self.before_close = before_close
        self.gc_young_threshold = gc_young_threshold
        self.exit_signal: str | None = None
        self._drain_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
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
        if self.exit_signal and not self.is_exiting and time.monotonic() >= self._drain_until:
            log.info("drain finished; closing the listener", signal=self.exit_signal)
            if self.before_close is not None:
                await self.before_close()
            self.request_exit()


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
        timeout_keep_alive=5,
        ws_max_size=1_048_576,  # subscription messages are capped at 1 MiB
    )
    server = DrainingServer(
        config,
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
