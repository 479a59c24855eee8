"""What pcf-api takes from uvicorn beyond its published API.

uvicorn publishes ``Server(config).run()`` and ``serve()``; its shutdown on a signal is
immediate, and it re-raises the signal after a graceful stop (so the exit status is the
signal's, not 0). Kubernetes needs a drain period first and a clean exit, which only uvicorn's
undocumented ``handle_exit`` (the signal handler), ``on_tick`` (the main loop's tick) and
``startup`` methods allow. ``HookedServer`` overrides those three here and offers hooks of its
own, so that ``server.py`` uses none of uvicorn's internals.
"""

from __future__ import annotations

import inspect
import socket
from types import FrameType

import uvicorn
from starlette.types import Receive, Scope, Send

from pcf_api.compat import CompatibilityError, require_version

SUPPORTED = ">=0.30,<0.55"

_OVERRIDDEN = {
    "handle_exit": ["self", "sig", "frame"],
    "on_tick": ["self", "counter"],
    "startup": ["self", "sockets"],
}


class HookedServer(uvicorn.Server):
    """uvicorn's server with three hooks: a signal arrived, a tick of the main loop, started.

    Unlike uvicorn's own handler, a signal does not stop the server by itself and is not
    re-raised after shutdown: ``on_signal`` decides, and calls ``request_exit`` when it is time.
    """

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


def self_check() -> None:
    """Fail loudly unless the installed uvicorn still has the methods overridden here."""
    require_version("uvicorn", SUPPORTED)
    for name, parameters in _OVERRIDDEN.items():
        method = getattr(uvicorn.Server, name, None)
        if method is None or list(inspect.signature(method).parameters) != parameters:
            raise CompatibilityError(f"uvicorn.Server.{name} is not what compat.uvicorn overrides")
    server = uvicorn.Server(uvicorn.Config(app=_no_app, log_config=None))  # leaves logging alone
    for attribute in ("started", "should_exit", "force_exit"):
        if not isinstance(getattr(server, attribute, None), bool):
            raise CompatibilityError(f"uvicorn.Server has no boolean {attribute!r}")
