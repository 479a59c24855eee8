"""A logged exception: type and fingerprint always, traceback only when asked for."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pcf_api.observability.exceptions import exception_fields, exception_type, fingerprint


class LedgerError(Exception):
    pass


def fail_here(kind: type[Exception] = LedgerError) -> None:
    raise kind("balance is negative")


def fail_elsewhere() -> None:
    raise LedgerError("balance is negative")


def caught(function: Any, *args: Any) -> BaseException:
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001 - each test says which it expects
        return error
    raise AssertionError("nothing was raised")


def test_the_type_is_named_with_its_module_except_for_builtins() -> None:
    assert exception_type(LedgerError()) == f"{__name__}.LedgerError"
    assert exception_type(KeyError()) == "KeyError"


def release(blank_lines: int, install_path: str) -> Any:
    """``fail_here`` as another release would have it: moved down the file, installed elsewhere."""
    source = "\n" * blank_lines + "def fail_here():\n    raise LedgerError('balance is negative')\n"
    namespace: dict[str, Any] = {"__name__": __name__, "LedgerError": LedgerError}
    exec(compile(source, install_path, "exec"), namespace)  # noqa: S102 - our own source
    return namespace["fail_here"]


def test_the_same_path_gives_the_same_fingerprint_whatever_the_lines_or_install_path() -> None:
    first = caught(release(0, "/app/.venv/lib/python3.11/site-packages/pcf_api/x.py"))
    second = caught(release(40, "/home/dev/pcf-api/src/pcf_api/x.py"))
    assert fingerprint(first) == fingerprint(second) == fingerprint(caught(fail_here))
    assert len(fingerprint(first)) == 16


def test_another_function_or_another_type_is_another_fingerprint() -> None:
    here = fingerprint(caught(fail_here))
    assert fingerprint(caught(fail_elsewhere)) != here
    assert fingerprint(caught(fail_here, ValueError)) != here


def test_without_tracebacks_a_line_carries_type_and_fingerprint_only() -> None:
    error = caught(fail_here)
    event = exception_fields(tracebacks=False)(None, "error", {"exc_info": error})
    assert event == {"exception_type": exception_type(error), "fingerprint": fingerprint(error)}


def test_with_tracebacks_the_full_traceback_is_added() -> None:
    error = caught(fail_here)
    event = exception_fields(tracebacks=True)(None, "error", {"exc_info": error})
    assert event["fingerprint"] == fingerprint(error)
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "in fail_here" in event["exception"]
    assert event["exception"].endswith("LedgerError: balance is negative")


def test_exc_info_true_means_the_exception_being_handled() -> None:
    render = exception_fields(tracebacks=False)
    event: MutableMapping[str, Any] = {}
    try:
        fail_here()
    except LedgerError as error:
        event = render(None, "error", {"exc_info": True})
        handled = error
    assert event["fingerprint"] == fingerprint(handled)
    assert render(None, "error", {"exc_info": True}) == {}  # nothing being handled
