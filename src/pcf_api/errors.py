"""Stable error codes, their HTTP statuses, and the one JSON shape every non-GraphQL error takes.

Clients branch on ``code``; operators search logs by ``trace_id``. Messages are written for
humans and never carry internals (stack traces, SQL, host names, file paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    """Every error code the service can return. Adding one is an API change."""

    INVALID_INPUT = "INVALID_INPUT"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNPROCESSABLE_ENTITY = "UNPROCESSABLE_ENTITY"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DATABASE_ERROR = "DATABASE_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    QUERY_TOO_LARGE = "QUERY_TOO_LARGE"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
    DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNPROCESSABLE_ENTITY: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.DATABASE_ERROR: 503,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.QUERY_TOO_DEEP: 400,
    ErrorCode.QUERY_TOO_COMPLEX: 400,
    ErrorCode.TOO_MANY_ALIASES: 400,
    ErrorCode.QUERY_TOO_LARGE: 400,
    # Apollo Client's persisted-queries link reads the code from a 4xx body and resends the
    # document; sent with Cache-Control: no-store, so no CDN keeps the miss.
    ErrorCode.PERSISTED_QUERY_NOT_FOUND: 404,
    ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED: 400,
    ErrorCode.DOCUMENT_NOT_TRUSTED: 400,
    # A WebSocket subscription whose client read too slowly: its own pace, not the server's.
    ErrorCode.SUBSCRIBER_TOO_SLOW: 429,
}

_CODE_FOR_STATUS: Mapping[int, ErrorCode] = {
    400: ErrorCode.INVALID_INPUT,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.UNPROCESSABLE_ENTITY,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}

_DEFAULT_MESSAGE: Mapping[ErrorCode, str] = {
    ErrorCode.INVALID_INPUT: "The request is malformed.",
    ErrorCode.UNAUTHORIZED: "Authentication is required.",
    ErrorCode.FORBIDDEN: "You are not allowed to do this.",
    ErrorCode.NOT_FOUND: "Not found.",
    ErrorCode.METHOD_NOT_ALLOWED: "This method is not allowed here.",
    ErrorCode.CONFLICT: "The request conflicts with the current state.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body is too large.",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "POST bodies must be application/json.",
    ErrorCode.UNPROCESSABLE_ENTITY: "The request cannot be processed.",
    ErrorCode.RATE_LIMITED: "Too many requests.",
    ErrorCode.INTERNAL_ERROR: "An internal error occurred.",
    ErrorCode.DATABASE_ERROR: "The database is unavailable.",
    ErrorCode.SERVICE_UNAVAILABLE: "The service is temporarily unavailable.",
    ErrorCode.TIMEOUT: "The request took too long.",
    ErrorCode.QUERY_TOO_DEEP: "The query is nested too deeply.",
    ErrorCode.QUERY_TOO_COMPLEX: "The query is too complex.",
    ErrorCode.TOO_MANY_ALIASES: "The query uses too many aliases.",
    ErrorCode.QUERY_TOO_LARGE: "The query document is too large.",
    ErrorCode.PERSISTED_QUERY_NOT_FOUND: "No document is known under this hash; send it too.",
    ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED: "Persisted queries are disabled.",
    ErrorCode.DOCUMENT_NOT_TRUSTED: "Only trusted documents are accepted.",
    ErrorCode.SUBSCRIBER_TOO_SLOW: "The subscription fell behind its events; subscribe again.",
}


def code_for_status(status: int) -> ErrorCode:
    """The error code a bare HTTP status maps to; unknown statuses count as internal errors."""
    if status in _CODE_FOR_STATUS:
        return _CODE_FOR_STATUS[status]
    if 400 <= status < 500:
        return ErrorCode.INVALID_INPUT
    return ErrorCode.INTERNAL_ERROR


def default_message(code: ErrorCode) -> str:
    return _DEFAULT_MESSAGE[code]


class AppError(Exception):
    """An error meant for the client: its code, message and extensions are safe to show."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or default_message(code)
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})
        super().__init__(self.message)


class StoreError(Exception):
    """A database operation failed. The store raises only these (never the driver's or
    SQLAlchemy's errors), so the layers above map failures to codes without knowing the store.

    The message describes the underlying error for logs and is never sent to clients; clients
    get ``default_message(code)``. ``reason`` names the underlying error's type, which is what
    log lines about the failure report.
    """

    code: ClassVar[ErrorCode] = ErrorCode.DATABASE_ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or type(self).__name__


class StoreUnavailable(StoreError):
    """The database cannot be reached (refused, dropped, restarting): an outage, which makes
    writes wait and reads fall back to the cache."""


class StoreOverloaded(StoreError):
    """No pooled connection came free in time: the database answers, this instance is busy.
    Not an outage; the client should retry shortly."""

    code = ErrorCode.SERVICE_UNAVAILABLE


class StoreTimeout(StoreError):
    """The database cancelled a statement that ran past its statement timeout."""

    code = ErrorCode.TIMEOUT


class StoreConflict(StoreError):
    """A write broke a uniqueness or integrity constraint. Every key is chosen by the server
    today, so a client never causes one: it stays DATABASE_ERROR rather than CONFLICT."""


def reason_of(error: BaseException) -> str:
    """What a log line names as the cause of ``error``: the underlying error's type."""
    return error.reason if isinstance(error, StoreError) else type(error).__name__


def utc_timestamp() -> str:
    """ISO 8601 UTC with millisecond precision, the one timestamp format of the service."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(
    code: ErrorCode,
    message: str,
    trace_id: str,
    *,
    path: str | None = None,
    extensions: Mapping[str, Any] | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    """The ``{"error": {...}}`` document of every non-GraphQL error response; ``span_id`` when
    the request is traced."""
    error: dict[str, Any] = {
        "code": code.value,
        "message": message,
        "trace_id": trace_id,
        "timestamp": utc_timestamp(),
    }
    if span_id is not None:
        error["span_id"] = span_id
    if path is not None:
        error["path"] = path
    if extensions:
        error["extensions"] = dict(extensions)
    return {"error": error}
