"""GraphQL errors as clients see them: a stable code, trace id and timestamp, nothing internal.

Resolvers raise AppError for anything the client should know about. Database failures become
DATABASE_ERROR, time-outs TIMEOUT, no free pooled connection (overload) SERVICE_UNAVAILABLE,
and anything else INTERNAL_ERROR with a generic message —
the exception itself is logged under the same trace id, never sent.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from sqlalchemy.exc import SQLAlchemyError

from pcf_api.errors import AppError, ErrorCode, default_message, utc_timestamp
from pcf_api.observability.logging import get_logger
from pcf_api.observability.tracecontext import current_span_id
from pcf_api.store.database import is_pool_exhausted, is_statement_timeout

log = get_logger(__name__)


def error_code(error: GraphQLError) -> ErrorCode:
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return ErrorCode.INVALID_INPUT  # syntax, validation or variable coercion
    if isinstance(original, AppError):
        return original.code
    if isinstance(original, TimeoutError) or (
        isinstance(original, SQLAlchemyError) and is_statement_timeout(original)
    ):
        return ErrorCode.TIMEOUT
    if is_pool_exhausted(original):
        return ErrorCode.SERVICE_UNAVAILABLE
    if isinstance(original, SQLAlchemyError | ConnectionError):
        return ErrorCode.DATABASE_ERROR
    return ErrorCode.INTERNAL_ERROR


def format_error(error: GraphQLError, trace_id: str) -> dict[str, Any]:
    code = error_code(error)
    original = error.original_error
    extensions: dict[str, Any] = {}
    if isinstance(original, AppError):
        message = original.message
        extensions.update(original.extensions)
    elif original is None or isinstance(original, GraphQLError):
        message = error.message
    else:
        message = default_message(code)
        if code is ErrorCode.INTERNAL_ERROR:
            log.error("resolver failed", path=error.path, exc_info=original)
        else:
            log.warning(
                "resolver failed", path=error.path, code=code, reason=type(original).__name__
            )
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
