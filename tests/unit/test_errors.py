"""Error codes, their HTTP statuses, and the one JSON error shape (spec: errors.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from graphql import GraphQLError

from pcf_api.errors import (
    AppError,
    ErrorCode,
    StoreConflict,
    StoreError,
    StoreOverloaded,
    StoreTimeout,
    StoreUnavailable,
    code_for_status,
    default_message,
    error_body,
    reason_of,
    utc_timestamp,
)
from pcf_api.graphql.formatting import error_code, format_error
from support.logs import capture_logs

# The contract with clients: each code and the HTTP status it is always sent with.
SPEC_STATUS = {
    "INVALID_INPUT": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "UNPROCESSABLE_ENTITY": 422,
    "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "DATABASE_ERROR": 503,
    "SERVICE_UNAVAILABLE": 503,
    "TIMEOUT": 504,
    "QUERY_TOO_DEEP": 400,
    "QUERY_TOO_COMPLEX": 400,
    "TOO_MANY_ALIASES": 400,
    "QUERY_TOO_LARGE": 400,
    "PERSISTED_QUERY_NOT_FOUND": 404,
    "PERSISTED_QUERY_NOT_SUPPORTED": 400,
    "DOCUMENT_NOT_TRUSTED": 400,
    "SUBSCRIBER_TOO_SLOW": 429,
}

ISO_UTC_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class TestErrorCodes:
    def test_the_set_of_codes_is_exactly_the_specified_one(self) -> None:
        # Adding or removing a code is an API change: this test must be updated deliberately.
        assert {code.value for code in ErrorCode} == set(SPEC_STATUS)

    @pytest.mark.parametrize(("name", "status"), SPEC_STATUS.items())
    def test_each_code_has_its_specified_http_status(self, name: str, status: int) -> None:
        assert ErrorCode(name).http_status == status

    @pytest.mark.parametrize("code", list(ErrorCode))
    def test_code_value_is_its_name(self, code: ErrorCode) -> None:
        # Clients branch on the string; it is the SCREAMING_SNAKE name itself.
        assert code.value == code.name
        assert str(code) == code.name


class TestCodeForStatus:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (400, ErrorCode.INVALID_INPUT),
            (401, ErrorCode.UNAUTHORIZED),
            (403, ErrorCode.FORBIDDEN),
            (404, ErrorCode.NOT_FOUND),
            (405, ErrorCode.METHOD_NOT_ALLOWED),
            (409, ErrorCode.CONFLICT),
            (413, ErrorCode.PAYLOAD_TOO_LARGE),
            (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
            (422, ErrorCode.UNPROCESSABLE_ENTITY),
            (429, ErrorCode.RATE_LIMITED),
            (500, ErrorCode.INTERNAL_ERROR),
            (503, ErrorCode.SERVICE_UNAVAILABLE),
            (504, ErrorCode.TIMEOUT),
        ],
    )
    def test_known_statuses_map_to_their_code(self, status: int, code: ErrorCode) -> None:
        assert code_for_status(status) is code

    @pytest.mark.parametrize("status", [402, 406, 410, 418, 451, 499])
    def test_unknown_4xx_is_invalid_input(self, status: int) -> None:
        assert code_for_status(status) is ErrorCode.INVALID_INPUT

    @pytest.mark.parametrize("status", [501, 502, 505, 599])
    def test_unknown_5xx_is_internal_error(self, status: int) -> None:
        assert code_for_status(status) is ErrorCode.INTERNAL_ERROR

    @pytest.mark.parametrize("status", [200, 302, 600])
    def test_non_error_statuses_count_as_internal_errors(self, status: int) -> None:
        assert code_for_status(status) is ErrorCode.INTERNAL_ERROR

    @pytest.mark.parametrize("status", sorted(set(SPEC_STATUS.values()) | {400, 500}))
    def test_mapping_round_trips_to_the_same_status(self, status: int) -> None:
        assert code_for_status(status).http_status == status


class TestDefaultMessages:
    @pytest.mark.parametrize("code", list(ErrorCode))
    def test_every_code_has_a_human_sentence(self, code: ErrorCode) -> None:
        message = default_message(code)
        assert message
        assert message[0].isupper()
        assert message.endswith(".")
        # Never the code itself, never internals.
        assert code.value not in message

    def test_default_messages_are_distinct(self) -> None:
        messages = [default_message(code) for code in ErrorCode]
        assert len(set(messages)) == len(messages)

    @pytest.mark.parametrize(
        ("code", "message"),
        [
            (ErrorCode.NOT_FOUND, "Not found."),
            (ErrorCode.INTERNAL_ERROR, "An internal error occurred."),
            (ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large."),
            (ErrorCode.METHOD_NOT_ALLOWED, "This method is not allowed here."),
        ],
    )
    def test_selected_default_messages(self, code: ErrorCode, message: str) -> None:
        assert default_message(code) == message


class TestAppError:
    def test_defaults_to_the_codes_message_and_no_extras(self) -> None:
        error = AppError(ErrorCode.FORBIDDEN)
        assert error.code is ErrorCode.FORBIDDEN
        assert error.message == default_message(ErrorCode.FORBIDDEN)
        assert error.extensions == {}
        assert error.headers == {}
        assert str(error) == error.message

    def test_empty_message_falls_back_to_the_default(self) -> None:
        assert AppError(ErrorCode.CONFLICT, "").message == default_message(ErrorCode.CONFLICT)

    def test_carries_message_extensions_and_headers(self) -> None:
        extensions = {"field": "title"}
        headers = {"Retry-After": "3"}
        error = AppError(
            ErrorCode.RATE_LIMITED, "Slow down.", extensions=extensions, headers=headers
        )
        assert error.message == "Slow down."
        assert str(error) == "Slow down."
        assert error.extensions == {"field": "title"}
        assert error.headers == {"Retry-After": "3"}

    def test_copies_extensions_and_headers(self) -> None:
        extensions = {"field": "title"}
        headers = {"Retry-After": "3"}
        error = AppError(ErrorCode.INVALID_INPUT, extensions=extensions, headers=headers)
        extensions["field"] = "changed"
        headers["Retry-After"] = "99"
        assert error.extensions == {"field": "title"}
        assert error.headers == {"Retry-After": "3"}

    def test_is_an_exception(self) -> None:
        with pytest.raises(AppError) as info:
            raise AppError(ErrorCode.NOT_FOUND)
        assert info.value.code.http_status == 404


class TestUtcTimestamp:
    def test_iso_8601_utc_with_milliseconds_and_z(self) -> None:
        stamp = utc_timestamp()
        assert ISO_UTC_MILLIS.match(stamp), stamp

    def test_is_now(self) -> None:
        parsed = datetime.fromisoformat(utc_timestamp().replace("Z", "+00:00"))
        assert parsed.tzinfo is not None
        assert parsed.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - parsed) < timedelta(seconds=5)


class TestErrorBody:
    def test_minimal_shape(self) -> None:
        body = error_body(ErrorCode.NOT_FOUND, "Not found.", "ab" * 16)
        assert set(body) == {"error"}
        error = body["error"]
        assert set(error) == {"code", "message", "trace_id", "timestamp"}
        assert error["code"] == "NOT_FOUND"
        assert isinstance(error["code"], str)
        assert error["message"] == "Not found."
        assert error["trace_id"] == "ab" * 16
        assert ISO_UTC_MILLIS.match(error["timestamp"])

    def test_with_path_and_extensions(self) -> None:
        body = error_body(
            ErrorCode.PAYLOAD_TOO_LARGE,
            "Too big.",
            "t" * 32,
            path="/graphql",
            extensions={"maximum": 1024},
        )
        assert body["error"]["path"] == "/graphql"
        assert body["error"]["extensions"] == {"maximum": 1024}
        assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def test_a_traced_request_also_names_its_span(self) -> None:
        body = error_body(ErrorCode.TIMEOUT, "Slow.", "t" * 32, span_id="00f067aa0ba902b7")
        assert body["error"]["span_id"] == "00f067aa0ba902b7"
        assert body["error"]["trace_id"] == "t" * 32

    def test_empty_extensions_are_left_out(self) -> None:
        body = error_body(ErrorCode.CONFLICT, "Conflict.", "x", extensions={})
        assert "extensions" not in body["error"]
        assert "path" not in body["error"]

    def test_empty_path_is_kept(self) -> None:
        # Only None means "no path"; an explicit value is reported as given.
        assert error_body(ErrorCode.CONFLICT, "Conflict.", "x", path="")["error"]["path"] == ""

    def test_extensions_are_copied(self) -> None:
        extensions = {"maximum": 1}
        body = error_body(ErrorCode.INVALID_INPUT, "Bad.", "x", extensions=extensions)
        extensions["maximum"] = 2
        assert body["error"]["extensions"] == {"maximum": 1}


# The store's typed errors and the codes the GraphQL layer answers them with: the same codes,
# messages and log lines as when the GraphQL layer read SQLAlchemy's errors itself.
STORE_CODES = [
    (StoreError, "DATABASE_ERROR"),
    (StoreUnavailable, "DATABASE_ERROR"),
    (StoreConflict, "DATABASE_ERROR"),
    (StoreOverloaded, "SERVICE_UNAVAILABLE"),
    (StoreTimeout, "TIMEOUT"),
]


class TestStoreErrors:
    @pytest.mark.parametrize(("kind", "code"), STORE_CODES)
    def test_each_kind_carries_its_code(self, kind: type[StoreError], code: str) -> None:
        assert kind.code is ErrorCode(code)
        assert issubclass(kind, StoreError)
        assert not issubclass(kind, AppError)  # never shown as it is: the message is internal

    def test_the_reason_is_the_underlying_error_type_else_its_own(self) -> None:
        assert StoreTimeout("QueryCanceledError: canceling", reason="DBAPIError").reason == (
            "DBAPIError"
        )
        assert StoreTimeout("x").reason == "StoreTimeout"
        assert reason_of(StoreUnavailable("x", reason="OperationalError")) == "OperationalError"
        assert reason_of(ConnectionRefusedError()) == "ConnectionRefusedError"

    @pytest.mark.parametrize(("kind", "code"), STORE_CODES)
    def test_the_graphql_layer_answers_its_code_with_the_generic_message(
        self, kind: type[StoreError], code: str
    ) -> None:
        secret = "OperationalError: could not connect to db-primary.internal:5432"
        error = GraphQLError("boom", path=["notes"], original_error=kind(secret, reason="Operr"))
        assert error_code(error) is ErrorCode(code)
        with capture_logs() as logs:
            formatted = format_error(error, "t" * 32)
        assert formatted["message"] == default_message(ErrorCode(code))
        assert formatted["extensions"]["code"] == code
        assert "db-primary" not in repr(formatted)
        [line] = logs.records("resolver failed")
        assert (line["code"], line["reason"], line["level"]) == (code, "Operr", "WARN")

    @pytest.mark.parametrize(
        ("original", "code"),
        [
            (TimeoutError(), "TIMEOUT"),
            (ConnectionResetError(), "DATABASE_ERROR"),
            (AppError(ErrorCode.CONFLICT), "CONFLICT"),
            (RuntimeError("bug"), "INTERNAL_ERROR"),
        ],
    )
    def test_errors_other_than_the_store_s_keep_their_codes(
        self, original: Exception, code: str
    ) -> None:
        raised = GraphQLError("x", path=["notes"], original_error=original)
        assert error_code(raised) is ErrorCode(code)

    def test_an_exception_raised_before_any_resolver_is_the_client_s(self) -> None:
        """Validation wraps what a scalar raised on the client's literal (``int()`` refusing a
        5000-digit number): no path, so no resolver failed, and it is INVALID_INPUT."""
        message = "Expected value of type 'Int', but encountered error 'Exceeds the limit'"
        wrapped = GraphQLError(message, original_error=ValueError("Exceeds the limit"))

        assert error_code(wrapped) is ErrorCode.INVALID_INPUT
        assert format_error(wrapped, "t" * 32)["message"] == message
