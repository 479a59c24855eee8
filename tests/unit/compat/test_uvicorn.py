"""compat.uvicorn: the server hooks built on uvicorn's undocumented methods, checked at start-up."""

from __future__ import annotations

import logging
import signal

import pytest
import uvicorn

from pcf_api.compat import CompatibilityError
from pcf_api.compat import uvicorn as compat
from pcf_api.compat.uvicorn import HookedServer


async def app(scope: object, receive: object, send: object) -> None:
    """Never called: these servers are not run."""


class Recording(HookedServer):
    def __init__(self) -> None:
        super().__init__(uvicorn.Config(app=app))
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
    server = HookedServer(uvicorn.Config(app=app))
    server.handle_exit(signal.SIGTERM, None)
    assert server.is_exiting
    assert not server.was_forced


def test_request_exit_can_force() -> None:
    server = HookedServer(uvicorn.Config(app=app))
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


def test_the_self_check_leaves_logging_as_the_service_configured_it() -> None:
    # uvicorn.Config applies uvicorn's own logging configuration unless told not to; the
    # service's JSON pipeline must survive the check.
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    before = [(list(logger.handlers), logger.propagate) for logger in loggers]
    compat.self_check()
    assert [(list(logger.handlers), logger.propagate) for logger in loggers] == before
