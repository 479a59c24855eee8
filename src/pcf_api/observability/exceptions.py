"""How a logged exception appears: its type and fingerprint always, its traceback on request.

A traceback in a production log says more than an operator needs (paths, source lines, values
in messages) and is many lines in a collector that thinks in lines. The fingerprint stands in
for it: a hash of the exception type and the frames it passed through, each named by module and
function, so the same bug gives the same fingerprint on every pod and release until the code
path changes, whatever the line numbers or the install path. Errors are grouped by it, and a
debugging session turns tracebacks on (``log.tracebacks``) to see one in full.
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from collections.abc import Callable
from types import TracebackType

from structlog.typing import EventDict, WrappedLogger

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def exception_type(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def fingerprint(error: BaseException) -> str:
    """16 hex digits naming the exception type and the frames of its traceback."""
    parts = [exception_type(error)]
    for frame, _ in traceback.walk_tb(error.__traceback__):
        module = frame.f_globals.get("__name__", "?")
        parts.append(f"{module}:{frame.f_code.co_name}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def exception_fields(*, tracebacks: bool) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    """A processor turning ``exc_info`` into ``exception_type``, ``fingerprint`` and, with
    ``tracebacks``, ``exception`` (the formatted traceback)."""

    def render(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        exc_info = _exc_info(event_dict.pop("exc_info", None))
        if exc_info is None:
            return event_dict
        _, error, _ = exc_info
        event_dict["exception_type"] = exception_type(error)
        event_dict["fingerprint"] = fingerprint(error)
        if tracebacks:
            event_dict["exception"] = "".join(traceback.format_exception(*exc_info)).rstrip()
        return event_dict

    return render


def _exc_info(value: object) -> ExcInfo | None:
    if value is True:
        current = sys.exc_info()
        return None if current[1] is None else current
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    return None
