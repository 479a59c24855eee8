"""The logging pipeline: one line format for every logger, and secrets that never get out.

Every test configures logging in its body (so the pipeline's handler is the root's only one) into
a StringIO and reads back what would have been written.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pcf_api.observability.logging import (
    REDACTED,
    access_log,
    audit_log,
    close_logging,
    configure_logging,
    dropped_lines,
    flush_logs,
    get_logger,
    pseudonyms,
    request_credentials,
    scrubber,
)
from pcf_api.observability.tracecontext import current_trace_id

LEADING_KEYS = ["timestamp", "level", "module", "trace_id", "message"]
SIMPLE_SECRET = "s3cr3t-Value-123456"
# Needs escaping in JSON (" and \) and in a Python repr (\): the escaped forms must go too.
TRICKY_SECRET = 'pa"ss\\word-123456'
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@dataclass
class Output:
    stream: io.StringIO

    @property
    def text(self) -> str:
        assert flush_logs()
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every line parsed; fails if any line is not exactly one JSON object."""
        records = [json.loads(line) for line in self.lines()]
        assert all(isinstance(record, dict) for record in records)
        return records

    def only_record(self) -> dict[str, Any]:
        records = self.records()
        assert len(records) == 1, records
        return records[0]


Configure = Callable[..., Output]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put the process-wide logging state back as it was, whatever the test configured."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name, logger in [("", root), *manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    yield
    close_logging()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.captureWarnings(False)
    scrubber.set_secrets(())
    for logger in [root, *manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        level, handlers, propagate = saved.get(logger.name if logger is not root else "") or (
            logging.NOTSET,
            [],
            True,
        )
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def configure() -> Configure:
    """Calls configure_logging into a fresh StringIO (JSON and DEBUG unless told otherwise)."""

    def _configure(**kwargs: Any) -> Output:
        stream = io.StringIO()
        kwargs.setdefault("level", "DEBUG")
        kwargs.setdefault("log_format", "json")
        configure_logging(stream=stream, **kwargs)
        return Output(stream)

    return _configure


def escaped_forms(secret: str) -> set[str]:
    """The secret as it would be written raw, inside a repr, inside JSON, and both."""
    forms = {secret, repr(secret)[1:-1], repr(secret + '"')[1:-2]}
    return forms | {json.dumps(form, ensure_ascii=False)[1:-1] for form in forms}


def assert_not_leaked(text: str, secret: str) -> None:
    for form in escaped_forms(secret):
        assert form not in text, f"{form!r} leaked into {text!r}"


def string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from string_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_values(item)


# --- 1. One JSON object per line, whoever logs ---------------------------------------------------


def test_structlog_line_is_one_json_object_with_the_five_leading_keys_in_order(
    configure: Configure,
) -> None:
    out = configure()

    get_logger("pcf_api.x").info("hi", a=1, user={"id": 7, "roles": ["admin"]})

    record = out.only_record()
    assert list(record)[:5] == LEADING_KEYS
    assert record["level"] == "INFO"
    assert record["module"] == "pcf_api.x"
    assert record["trace_id"] is None
    assert record["message"] == "hi"
    assert record["a"] == 1
    assert record["user"] == {"id": 7, "roles": ["admin"]}
    assert "event" not in record
    assert "logger" not in record


def test_stdlib_line_has_the_same_shape_with_its_args_formatted(configure: Configure) -> None:
    out = configure()

    logging.getLogger("uvicorn.error").info("x %s", "y")

    record = out.only_record()
    assert list(record) == LEADING_KEYS
    assert record["level"] == "INFO"
    assert record["module"] == "uvicorn.error"
    assert record["trace_id"] is None
    assert record["message"] == "x y"


def test_structlog_positional_args_are_formatted_into_the_message(configure: Configure) -> None:
    out = configure()

    get_logger("pcf_api.x").info("%s of %d", "three", 4)

    assert out.only_record()["message"] == "three of 4"


@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(lambda: get_logger("pcf_api.x").info("m"), id="structlog"),
        pytest.param(lambda: logging.getLogger("pcf_api.x").info("m"), id="stdlib"),
    ],
)
def test_timestamp_is_iso8601_utc(configure: Configure, emit: Callable[[], None]) -> None:
    out = configure()
    before = datetime.now(UTC)

    emit()

    stamp = out.only_record()["timestamp"]
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC) + timedelta(seconds=1)


def test_structlog_and_stdlib_lines_look_the_same(configure: Configure) -> None:
    out = configure()

    get_logger("pcf_api.same").warning("same")
    logging.getLogger("pcf_api.same").warning("same")

    first, second = out.records()
    for record in (first, second):
        del record["timestamp"]
    assert (
        first
        == second
        == {
            "level": "WARN",
            "module": "pcf_api.same",
            "trace_id": None,
            "message": "same",
        }
    )


def test_values_json_cannot_hold_are_written_as_text(configure: Configure) -> None:
    out = configure()

    get_logger("pcf_api.x").info("paths", path=PurePosixPath("/srv/data"), ids={3})

    record = out.only_record()
    assert record["path"] == "/srv/data"
    assert record["ids"] == "{3}"


def test_values_orjson_refuses_do_not_cost_the_line_nor_reach_stderr(
    configure: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    out = configure(secrets=[SIMPLE_SECRET])

    get_logger("pcf_api.x").info(
        "odd values", by_status={200: 3, 404: 1}, huge=2**70, note=SIMPLE_SECRET
    )

    record = out.only_record()
    assert list(record)[:5] == LEADING_KEYS
    assert record["message"] == "odd values"
    assert record["by_status"] == {"200": 3, "404": 1}
    assert record["huge"] == str(2**70)
    assert record["note"] == REDACTED
    captured = capsys.readouterr()
    assert captured.err == ""
    assert SIMPLE_SECRET not in captured.out


def test_without_a_stream_lines_go_to_stdout_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()

    get_logger("pcf_api.x").debug("hidden")
    get_logger("pcf_api.x").info("shown")

    assert flush_logs()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["shown"]


STRUCTLOG_LEVELS = [
    ("debug", "DEBUG"),
    ("info", "INFO"),
    ("warning", "WARN"),
    ("warn", "WARN"),
    ("error", "ERROR"),
    ("exception", "ERROR"),
    ("critical", "FATAL"),
    ("fatal", "FATAL"),
]


@pytest.mark.parametrize(("method", "expected"), STRUCTLOG_LEVELS)
def test_structlog_levels_are_rendered_in_the_service_vocabulary(
    configure: Configure, method: str, expected: str
) -> None:
    out = configure()

    getattr(get_logger("pcf_api.x"), method)("m")

    assert out.only_record()["level"] == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "FATAL"),
    ],
)
def test_stdlib_levels_are_rendered_in_the_service_vocabulary(
    configure: Configure, level: int, expected: str
) -> None:
    out = configure()

    logging.getLogger("lib").log(level, "m")

    assert out.only_record()["level"] == expected


# --- 2. trace_id ---------------------------------------------------------------------------------


def test_trace_id_is_null_outside_a_request_and_the_requests_inside(configure: Configure) -> None:
    out = configure()
    structlog_log = get_logger("pcf_api.x")
    stdlib_log = logging.getLogger("lib")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    structlog_log.info("before")
    stdlib_log.info("before")
    token = current_trace_id.set(trace_id)
    structlog_log.info("inside")
    stdlib_log.info("inside")
    current_trace_id.reset(token)
    structlog_log.info("after")
    stdlib_log.info("after")

    assert [(r["message"], r["trace_id"]) for r in out.records()] == [
        ("before", None),
        ("before", None),
        ("inside", trace_id),
        ("inside", trace_id),
        ("after", None),
        ("after", None),
    ]


# --- 3. Redaction --------------------------------------------------------------------------------


def _raise_and_log_structlog(secret: str) -> None:
    try:
        raise RuntimeError(f"cannot connect with {secret}")
    except RuntimeError:
        get_logger("pcf_api.db").exception("connect failed")


def _raise_and_log_stdlib(secret: str) -> None:
    try:
        raise RuntimeError(f"cannot connect with {secret}")
    except RuntimeError:
        logging.getLogger("lib.db").exception("connect failed")


SECRET_PLACES: list[Any] = [
    pytest.param(lambda s: get_logger("pcf_api.x").info(f"dsn=db://u:{s}@h"), id="sl-message"),
    pytest.param(lambda s: get_logger("pcf_api.x").info("m", value=s), id="sl-field"),
    pytest.param(
        lambda s: get_logger("pcf_api.x").info("m", cfg={"db": {"dsn": f"u:{s}@h"}}),
        id="sl-nested-dict",
    ),
    pytest.param(lambda s: get_logger("pcf_api.x").info("m", argv=["--x", s]), id="sl-list"),
    pytest.param(lambda s: get_logger("pcf_api.x").info("got %s", s), id="sl-positional-arg"),
    pytest.param(_raise_and_log_structlog, id="sl-exception"),
    pytest.param(lambda s: logging.getLogger("lib").warning(f"key {s}"), id="std-message"),
    pytest.param(lambda s: logging.getLogger("lib").warning("key %s", s), id="std-%s-arg"),
    pytest.param(lambda s: logging.getLogger("lib").warning("key %r", s), id="std-%r-arg"),
    pytest.param(
        lambda s: logging.getLogger("lib").warning("cfg %s", {"dsn": s}), id="std-dict-arg"
    ),
    pytest.param(_raise_and_log_stdlib, id="std-exception"),
    pytest.param(lambda s: warnings.warn(f"bad key {s}", stacklevel=1), id="warning"),
]


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("secret", [SIMPLE_SECRET, TRICKY_SECRET], ids=["simple", "tricky"])
@pytest.mark.parametrize("emit", SECRET_PLACES)
def test_a_configured_secret_never_appears_wherever_it_is_logged(
    configure: Configure, emit: Callable[[str], None], secret: str, log_format: str
) -> None:
    out = configure(log_format=log_format, secrets=["unrelated-secret-value", secret])

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        emit(secret)

    assert out.text, "nothing was logged"
    assert_not_leaked(out.text, secret)
    assert REDACTED in out.text
    if log_format == "json":
        (record,) = out.records()
        assert all(secret not in text for text in string_values(record))


def test_every_configured_secret_is_scrubbed_and_empty_ones_are_ignored(
    configure: Configure,
) -> None:
    out = configure(secrets=["", "first-secret-aaaa", "second-secret-bbbb"])

    get_logger("pcf_api.x").info("first-secret-aaaa and second-secret-bbbb", other="plain")

    record = out.only_record()
    assert record["message"] == f"{REDACTED} and {REDACTED}"
    assert record["other"] == "plain"


def test_a_secret_containing_a_shorter_one_is_scrubbed_whole(configure: Configure) -> None:
    out = configure(secrets=["abcd", "xxabcdyy-long"])

    get_logger("pcf_api.x").info("token xxabcdyy-long")

    assert out.only_record()["message"] == f"token {REDACTED}"


SENSITIVE_NAMES = [
    "authorization",
    "Authorization",
    "proxy_authorization",
    "COOKIE",
    "set_cookie",
    "password",
    "db_password",
    "passwd",
    "token",
    "access_token",
    "Secret",
    "client_secret",
    "api_key",
    "API-KEY",
    "apikey",
    "credentials",
]


@pytest.mark.parametrize("name", SENSITIVE_NAMES)
def test_fields_named_like_credentials_are_redacted(configure: Configure, name: str) -> None:
    out = configure()

    get_logger("pcf_api.x").info("m", **{name: "not-a-configured-value", "user": "ann"})

    record = out.only_record()
    assert record[name] == REDACTED
    assert record["user"] == "ann"
    assert "not-a-configured-value" not in out.text


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_credential_named_keys_are_redacted_at_any_depth(
    configure: Configure, log_format: str
) -> None:
    out = configure(log_format=log_format)

    get_logger("pcf_api.x").info(
        "request",
        headers={"Authorization": "hdr-value-1", "Accept": "application/json"},
        upstream={"auth": {"Api_Key": "hdr-value-2", "region": "eu"}},
        hops=[{"cookie": "hdr-value-3", "host": "a"}],
        pair=({"password": "hdr-value-4"},),
    )

    for value in ("hdr-value-1", "hdr-value-2", "hdr-value-3", "hdr-value-4"):
        assert value not in out.text
    if log_format == "json":
        record = out.only_record()
        assert record["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
        assert record["upstream"] == {"auth": {"Api_Key": REDACTED, "region": "eu"}}
        assert record["hops"] == [{"cookie": REDACTED, "host": "a"}]
        assert record["pair"] == [{"password": REDACTED}]
    else:
        assert "'Accept': 'application/json'" in out.text
        assert "'region': 'eu'" in out.text


def test_bound_context_fields_named_like_credentials_are_redacted(configure: Configure) -> None:
    out = configure()

    with structlog.contextvars.bound_contextvars(session_token="ctx-value-1"):
        get_logger("pcf_api.x").info("m")

    assert out.only_record()["session_token"] == REDACTED
    assert "ctx-value-1" not in out.text


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer", "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"),
        ("bearer", "abc-def_ghi~jkl"),
        ("Basic", "dXNlcjpwYXNzd29yZA=="),
        ("Digest", "username+realm/nonce"),
    ],
)
def test_credential_schemes_are_scrubbed_even_when_not_configured(
    configure: Configure, header: str, token: str
) -> None:
    out = configure()

    get_logger("pcf_api.x").info(f"upstream sent Authorization: {header} {token}")
    logging.getLogger("httpx").info("header %s", f"{header}  {token}")

    assert token not in out.text
    first, second = out.records()
    assert first["message"] == f"upstream sent Authorization: {header} {REDACTED}"
    assert second["message"] == f"header {header} {REDACTED}"


def test_request_credentials_are_scrubbed_only_while_set(configure: Configure) -> None:
    out = configure()
    structlog_log = get_logger("pcf_api.x")
    stdlib_log = logging.getLogger("lib")

    token = request_credentials.set(("sessionid-cookie-value", 'opaque"cred\\value'))
    try:
        structlog_log.info("cookie sessionid-cookie-value", raw='opaque"cred\\value')
        stdlib_log.info("seen %r", 'opaque"cred\\value')
    finally:
        request_credentials.reset(token)
    structlog_log.info("cookie sessionid-cookie-value")

    during = out.lines()[:2]
    for line in during:
        assert_not_leaked(line, "sessionid-cookie-value")
        assert_not_leaked(line, 'opaque"cred\\value')
        assert REDACTED in line
    assert out.records()[2]["message"] == "cookie sessionid-cookie-value"


def test_request_credentials_and_configured_secrets_both_apply(configure: Configure) -> None:
    out = configure(secrets=["abcd"])

    token = request_credentials.set(("xxabcdyy-cookie",))
    try:
        get_logger("pcf_api.x").info("abcd and xxabcdyy-cookie")
    finally:
        request_credentials.reset(token)

    assert out.only_record()["message"] == f"{REDACTED} and {REDACTED}"


printable = st.characters(exclude_categories=("Cc", "Cs"))


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(printable, min_size=4),
    prefix=st.text(),
    suffix=st.text(),
    log_format=st.sampled_from(["json", "console"]),
)
@example(secret=TRICKY_SECRET, prefix="'", suffix='"', log_format="console")
@example(secret="EDAC", prefix="", suffix="", log_format="json")  # part of the marker itself
@example(secret="D]D]", prefix="", suffix="D]", log_format="json")  # forms again after a marker
@example(secret="r [RE", prefix="Bearer abcd ", suffix="", log_format="json")
def test_property_a_configured_secret_never_appears_in_a_line(
    secret: str, prefix: str, suffix: str, log_format: str
) -> None:
    stream = io.StringIO()
    configure_logging(level="DEBUG", log_format=log_format, secrets=[secret], stream=stream)
    message = prefix + secret + suffix

    get_logger("pcf_api.prop").info(message)
    get_logger("pcf_api.prop").info("field", value=message)
    logging.getLogger("prop").info("arg %s", message)

    assert flush_logs()
    text = stream.getvalue()
    assert text
    assert secret not in text
    for form in escaped_forms(secret):
        assert form not in text


# --- 4. Levels -----------------------------------------------------------------------------------


def test_root_level_filters_every_logger(configure: Configure) -> None:
    out = configure(level="WARNING")

    get_logger("pcf_api.x").info("sl-info")
    logging.getLogger("lib").info("std-info")
    get_logger("pcf_api.x").warning("sl-warning")
    logging.getLogger("lib").error("std-error")

    assert [r["message"] for r in out.records()] == ["sl-warning", "std-error"]


def test_structlog_calls_below_the_level_do_no_work(configure: Configure) -> None:
    out = configure(level="INFO")
    rendered: list[str] = []

    class Expensive:
        def __str__(self) -> str:
            rendered.append("str")
            return "expensive"

    get_logger("pcf_api.x").debug("value %s", Expensive())

    assert rendered == []
    assert out.text == ""


def test_module_levels_make_one_module_quieter_or_more_verbose(configure: Configure) -> None:
    out = configure(level="INFO", module_levels={"noisy": "ERROR", "chatty": "DEBUG"})

    for name in ("noisy", "noisy.sub", "chatty", "other"):
        get_logger(name).debug(f"{name} sl-debug")
        get_logger(name).info(f"{name} sl-info")
        logging.getLogger(name).debug(f"{name} std-debug")
        logging.getLogger(name).info(f"{name} std-info")
        logging.getLogger(name).error(f"{name} std-error")

    assert [r["message"] for r in out.records()] == [
        "noisy std-error",
        "noisy.sub std-error",
        "chatty sl-debug",
        "chatty sl-info",
        "chatty std-debug",
        "chatty std-info",
        "chatty std-error",
        "other sl-info",
        "other std-info",
        "other std-error",
    ]


def test_configuring_twice_leaves_one_handler_and_no_duplicate_lines(
    configure: Configure,
) -> None:
    first = configure()
    second = configure()
    third = configure(level="INFO")

    get_logger("pcf_api.x").info("once")
    logging.getLogger("lib").info("once too")

    assert len(logging.getLogger().handlers) == 1
    assert first.text == second.text == ""
    assert [r["message"] for r in third.records()] == ["once", "once too"]


# --- 5. uvicorn ----------------------------------------------------------------------------------


def test_uvicorn_loggers_go_through_the_one_handler_even_with_handlers_of_their_own(
    configure: Configure,
) -> None:
    elsewhere = io.StringIO()
    for name in UVICORN_LOGGERS:
        own = logging.getLogger(name)
        own.addHandler(logging.StreamHandler(elsewhere))
        own.propagate = False
        own.setLevel(logging.CRITICAL)

    out = configure(level="INFO")
    logging.getLogger("uvicorn").info("Uvicorn running on %s", "http://127.0.0.1:8080")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/graphql", "1.1", 200
    )

    assert elsewhere.getvalue() == ""
    for name in UVICORN_LOGGERS:
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate is True
    assert [(r["module"], r["level"], r["message"]) for r in out.records()] == [
        ("uvicorn", "INFO", "Uvicorn running on http://127.0.0.1:8080"),
        ("uvicorn.error", "INFO", "Started server process [42]"),
        ("uvicorn.access", "INFO", '127.0.0.1:5000 - "GET /graphql HTTP/1.1" 200'),
    ]


# --- 6. Console ----------------------------------------------------------------------------------


def test_console_format_writes_readable_non_json_lines(configure: Configure) -> None:
    out = configure(log_format="console")

    get_logger("pcf_api.x").info("hello console", answer=42)
    logging.getLogger("uvicorn.error").warning("port %d busy", 8080)

    lines = out.lines()
    assert len(lines) == 2
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "hello console" in lines[0]
    assert "INFO" in lines[0]
    assert "answer=42" in lines[0]
    assert "module=pcf_api.x" in lines[0]
    assert "port 8080 busy" in lines[1]
    assert "WARN" in lines[1]
    assert "module=uvicorn.error" in lines[1]
    assert all("trace_id=None" in line for line in lines)


def test_console_lines_carry_the_bound_trace_id(configure: Configure) -> None:
    out = configure(log_format="console")

    with structlog.contextvars.bound_contextvars(trace_id="4bf92f3577b34da6"):
        get_logger("pcf_api.x").info("in request")
        logging.getLogger("lib").info("in request too")

    assert all("trace_id=4bf92f3577b34da6" in line for line in out.lines())


def test_console_format_shows_exceptions_with_their_traceback(configure: Configure) -> None:
    out = configure(log_format="console")

    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("pcf_api.x").exception("failed")

    assert "failed" in out.text
    assert "Traceback (most recent call last)" in out.text
    assert "ValueError: boom" in out.text


def test_exceptions_are_one_json_field_with_the_traceback(configure: Configure) -> None:
    out = configure()

    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("lib").exception("failed %s", "hard")

    record = out.only_record()
    assert record["level"] == "ERROR"
    assert record["message"] == "failed hard"
    assert record["exception"].startswith("Traceback (most recent call last)")
    assert record["exception"].endswith("ValueError: boom")


# --- 7. Warnings ---------------------------------------------------------------------------------


def test_python_warnings_are_captured_into_the_pipeline(configure: Configure) -> None:
    out = configure()

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api is deprecated", DeprecationWarning, stacklevel=1)

    record = out.only_record()
    assert list(record)[:5] == LEADING_KEYS
    assert record["module"] == "py.warnings"
    assert record["level"] == "WARN"
    assert "DeprecationWarning: old api is deprecated" in record["message"]


# --- 8. the access line ----------------------------------------------------------------------


def test_access_line_has_the_leading_keys_and_the_requests_trace_id(configure: Configure) -> None:
    out = configure(level="INFO")
    token = current_trace_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        access_log.write(logging.INFO, {"method": "GET", "path": "/x", "status": 200})
    finally:
        current_trace_id.reset(token)

    record = out.only_record()
    assert list(record)[:5] == LEADING_KEYS
    assert record["level"] == "INFO"
    assert record["module"] == "pcf_api.access"
    assert record["message"] == "request"
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (record["method"], record["path"], record["status"]) == ("GET", "/x", 200)
    stamped = datetime.fromisoformat(record["timestamp"])
    assert abs(datetime.now(UTC) - stamped) < timedelta(seconds=5)


def test_access_line_is_scrubbed_like_every_other_line(configure: Configure) -> None:
    out = configure(secrets=[SIMPLE_SECRET, TRICKY_SECRET])
    token = request_credentials.set(("request-cred-987654",))
    try:
        access_log.write(
            logging.INFO,
            {"path": f"/a/{SIMPLE_SECRET}/{TRICKY_SECRET}/request-cred-987654", "status": 200},
        )
    finally:
        request_credentials.reset(token)

    assert SIMPLE_SECRET not in out.text
    assert json.dumps(TRICKY_SECRET)[1:-1] not in out.text
    assert "request-cred-987654" not in out.text
    assert REDACTED in out.only_record()["path"]


def test_access_line_respects_the_access_loggers_level(configure: Configure) -> None:
    out = configure(level="INFO", module_levels={"pcf_api.access": "WARNING"})

    assert not access_log.is_enabled_for(logging.INFO)
    access_log.write(logging.INFO, {"path": "/x"})
    access_log.write(logging.DEBUG, {"path": "/y"})

    assert out.text == ""


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_access_line_reaches_whichever_handler_is_configured(
    configure: Configure, log_format: str
) -> None:
    configure(log_format=log_format)
    current = configure(log_format=log_format)  # reconfigured: the old stream gets nothing

    access_log.write(logging.INFO, {"path": "/now-here", "status": 204})

    assert "/now-here" in current.text
    assert "204" in current.text


# --- 9. Prose about credentials stays readable ----------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Bearer tokens are not accepted: no signing keys are set.",
        "Bearer token.",
        "expected a Bearer token, got Basic auth",
        'answered 401 with WWW-Authenticate: Basic realm="metrics"',
        "the secret file is unreadable; keeping the last good secret",
        "password must be set when the database URL has none (passwords rotate)",
        "secrets: 3 watched, tokens: 2 issuers",
    ],
)
def test_messages_about_tokens_secrets_and_passwords_keep_their_words(
    configure: Configure, message: str
) -> None:
    out = configure(secrets=[SIMPLE_SECRET])

    get_logger("pcf_api.x").warning("refused", reason=message)
    logging.getLogger("lib").warning(message)

    first, second = out.records()
    assert first["reason"] == message
    assert second["message"] == message


@pytest.mark.parametrize(
    "value", ["tokens.abc.def", "token-9f8e7d", "eyJhbGciOiJIUzI1NiJ9.e30.sig", "changeme"]
)
def test_a_scheme_followed_by_a_value_is_still_scrubbed(configure: Configure, value: str) -> None:
    out = configure()

    get_logger("pcf_api.x").info(f"sent Authorization: Bearer {value} upstream")

    assert out.only_record()["message"] == f"sent Authorization: Bearer {REDACTED} upstream"


# --- 10. Privacy of the access and audit lines ----------------------------------------------------

HASH_KEY = "unit-test-log-hash-key-0123456789abcdef"


def keyed(value: str) -> str:
    return hmac.new(HASH_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        ("full", "203.0.113.77"),
        ("subnet", "203.0.113.0/24"),
        ("hash", keyed("203.0.113.77")),
        ("none", None),
    ],
)
def test_the_access_line_shows_the_client_as_client_ip_says(
    configure: Configure, mode: str, shown: str | None
) -> None:
    out = configure(client_ip=mode, hash_key=HASH_KEY)

    access_log.write(logging.INFO, {"path": "/x", "client": "203.0.113.77"})

    record = out.only_record()
    assert record.get("client") == shown
    assert ("client" in record) is (shown is not None)
    assert "203.0.113.77" not in out.text or mode == "full"


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_subjects_are_hashed_in_the_access_and_audit_lines_as_configured_apart(
    configure: Configure, log_format: str
) -> None:
    out = configure(subject="hash", audit_subject="raw", hash_key=HASH_KEY, log_format=log_format)

    access_log.write(logging.INFO, {"path": "/graphql", "subject": "alice"})
    audit_log.write(logging.INFO, {"subject": "alice", "decision": "allow"})

    access, audit = out.lines()
    assert keyed("alice") in access
    assert "alice" not in access
    assert "alice" in audit


def test_a_rotated_hash_key_applies_from_the_next_line(configure: Configure) -> None:
    out = configure(subject="hash", hash_key=HASH_KEY)
    access_log.write(logging.INFO, {"subject": "alice"})
    pseudonyms.set_key("rotated-" + HASH_KEY)
    access_log.write(logging.INFO, {"subject": "alice"})

    before, after = out.records()
    assert before["subject"] == keyed("alice")
    assert after["subject"] != keyed("alice")


# --- 11. Personal data in messages and values -----------------------------------------------------


def test_email_addresses_and_card_numbers_are_scrubbed_from_messages_and_values(
    configure: Configure,
) -> None:
    out = configure()

    get_logger("pcf_api.x").info("mail to alice@example.com", card="4111 1111 1111 1111")
    logging.getLogger("lib").info("charged %s for %s", "5500-0000-0000-0004", "bob@example.org")
    access_log.write(logging.INFO, {"path": "/users/carol@example.net", "status": 404})

    first, second, third = out.records()
    assert first["message"] == "mail to [EMAIL]"
    assert first["card"] == "[CARD]"
    assert second["message"] == "charged [CARD] for [EMAIL]"
    assert third["path"] == "/users/[EMAIL]"
    assert third["status"] == 404


def test_scrub_patterns_are_configurable_and_can_be_turned_off(configure: Configure) -> None:
    out = configure(scrub=[], scrub_patterns=[r"\bDE\d{20}\b"])

    get_logger("pcf_api.x").info("alice@example.com paid from DE89370400440532013000")

    assert out.only_record()["message"] == "alice@example.com paid from [SCRUBBED]"


# --- 12. Unexpected errors -----------------------------------------------------------------------


def test_without_tracebacks_an_error_line_has_type_fingerprint_and_trace_id(
    configure: Configure,
) -> None:
    out = configure(tracebacks=False)
    token = current_trace_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        for logger in (get_logger("pcf_api.x").exception, logging.getLogger("lib").exception):
            try:
                raise KeyError("missing")
            except KeyError:
                logger("unhandled error")
    finally:
        current_trace_id.reset(token)

    first, second = out.records()
    for record in (first, second):
        assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert record["exception_type"] == "KeyError"
        assert len(record["fingerprint"]) == 16
        assert "exception" not in record
        assert "Traceback" not in json.dumps(record)
    assert first["fingerprint"] == second["fingerprint"]  # the same frames, whoever logs


def test_with_tracebacks_the_error_line_has_the_traceback_as_well(configure: Configure) -> None:
    out = configure(tracebacks=True)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("pcf_api.x").exception("failed")

    record = out.only_record()
    assert record["exception_type"] == "ValueError"
    assert record["exception"].endswith("ValueError: boom")


# --- 13. A full buffer ---------------------------------------------------------------------------


def test_a_full_buffer_drops_info_before_warnings_and_counts_by_level(configure: Configure) -> None:
    writing = threading.Event()
    blocked = threading.Event()

    class Stalled(io.StringIO):
        def write(self, text: str) -> int:
            writing.set()
            blocked.wait(10)
            return super().write(text)

    stream = Stalled()
    configure_logging(level="DEBUG", stream=stream, buffer_lines=100)
    before = dropped_lines()
    logger = get_logger("pcf_api.x")
    logger.info("first")
    assert writing.wait(5)  # "first" is taken by the writer, which now waits on the stream
    for n in range(200):
        access_log.write(logging.INFO, {"n": n})
        logger.debug("detail", n=n)
    for n in range(15):  # a tenth of the buffer is kept for warnings and above: 10 of them
        logger.warning("warned", n=n)
    blocked.set()
    assert flush_logs()

    lost = {level: dropped_lines()[level] - before[level] for level in before}
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lost["INFO"] + lost["DEBUG"] == 400 - 90
    assert lost["WARN"] == 5
    assert [r["n"] for r in records if r["message"] == "warned"] == list(range(10))
    report = next(r for r in records if r["message"] == "log lines dropped")
    assert report["level"] == "WARN"
    assert report["dropped"] == {k: v for k, v in lost.items() if v}
