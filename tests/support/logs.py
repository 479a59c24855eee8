"""Capture what the service's real logging pipeline writes, as parsed JSON records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

from pcf_api.observability.logging import configure_logging, flush_logs, scrubber


class LogCapture:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def records(self, message: str | None = None) -> list[dict[str, Any]]:
        """Every line written, parsed; only those with ``message`` when it is given."""
        flush_logs()
        lines = [json.loads(line) for line in self._stream.getvalue().splitlines() if line.strip()]
        return [line for line in lines if message is None or line.get("message") == message]

    def find(self, message: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            record
            for record in self.records()
            if record.get("message") == message
            and all(record.get(key) == value for key, value in fields.items())
        ]

    def text(self) -> str:
        flush_logs()
        return self._stream.getvalue()


@contextmanager
def capture_logs(
    module_levels: Mapping[str, str] | None = None, secrets: Iterable[str] = ()
) -> Iterator[LogCapture]:
    """JSON logging into a buffer for the duration, told of ``secrets`` to scrub as `pcf-api
    serve` tells it of the configured ones; the previous root handlers come back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(
        log_format="json", stream=stream, module_levels=module_levels, secrets=secrets
    )
    try:
        yield LogCapture(stream)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        structlog.reset_defaults()
        scrubber.set_secrets(())
