"""GraphQL errors as clients see them: a stable code, trace id and timestamp, nothing internal.

Resolvers raise AppError for anything the client should know about. The store's typed errors
(``pcf_api.errors.StoreError``) carry their code: database failures DATABASE_ERROR, statement
time-outs TIMEOUT, no free pooled connection (overload) SERVICE_UNAVAILABLE. Other time-outs
are TIMEOUT, and anything else INTERNAL_ERROR with a generic message — the exception itself is
logged under the same trace id, never sent. An error without a path arose before any resolver
ran, in validation or variable coercion, from the client's document or variables: INVALID_INPUT,
even when it wraps the exception a scalar raised (``int()`` refusing a 5000-digit literal).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from pcf_api.errors import (
    AppError,
    ErrorCode,
    StoreError,
    default_message,
    reason_of,
    utc_timestamp,
)
from pcf_api.observability.logging import get_logger
from pcf_api.observability.tracecontext import current_span_id

log = get_logger(__name__)


def error_code(error: GraphQLError) -> ErrorCode:
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return ErrorCode.INVALID_INPUT  # syntax, validation or variable coercion
    if isinstance(original, AppError | StoreError):
        return original.code
    if _before_execution(error):
        return ErrorCode.INVALID_INPUT
    if isinstance(original, TimeoutError):
        return ErrorCode.TIMEOUT
    if isinstance(original, ConnectionError):
        return ErrorCode.DATABASE_ERROR
    return ErrorCode.INTERNAL_ERROR


def format_error(error: GraphQLError, trace_id: str) -> dict[str, Any]:
    code = error_code(error)
    original = error.original_error
    extensions: dict[str, Any] = {}
    if isinstance(original, AppError):
        message = original.message
        extensions.update(original.extensions)
    elif original is None or isinstance(original, GraphQLError) or _before_execution(error):
        message = error.message
    else:
        message = default_message(code)
        if code is ErrorCode.INTERNAL_ERROR:
            log.error("resolver failed", path=error.path, exc_info=original)
        else:
            log.warning("resolver failed", path=error.path, code=code, reason=reason_of(original))
    extensions.update(_identifiers(code, trace_id))
    formatted: dict[str, Any] = {"message": message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = error.path
    formatted["extensions"] = extensions
    return formatted


def _before_execution(error: GraphQLError) -> bool:
    """Raised in validation or coercion (no resolver's path), not by a resolver."""
    return not error.path


def app_error(error: AppError, trace_id: str) -> dict[str, Any]:
    """A request-level error (before execution) in the same shape as a resolver's."""
    return {
        "message": error.message,
        "extensions": {**error.extensions, **_identifiers(error.code, trace_id)},
    }


def _identifiers(code: ErrorCode, trace_id: str) -> dict[str, Any]:
    """Code, trace id, time, and the span id when the request is traced."""
    identifiers: dict[str, Any] = {
        "code": code.value,
        "traceId": trace_id,
        "timestamp": utc_timestamp(),
    }
    span_id = current_span_id()
    if span_id is not None:
        identifiers["spanId"] = span_id
    return identifiers
