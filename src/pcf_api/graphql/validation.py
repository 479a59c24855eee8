"""Input rules of the notes API. A violation is INVALID_INPUT naming the field and the rule."""

from __future__ import annotations

import re
import unicodedata

from pcf_api.errors import AppError, ErrorCode

NOTE_ID = re.compile(r"^[a-z_]+:[a-zA-Z0-9_-]+$")
# A user id as identity providers issue them: "alice", "auth0|5f1c…", "alice@example.com",
# "google-oauth2|1234", "urn:user:42". No spaces, quotes or control characters.
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@|:+-]*$")

TITLE_MAX = 200
CONTENT_MAX = 10_000
AUTHOR_MAX = 100
LIMIT_MAX = 100
OFFSET_MAX = 10_000
SEARCH_MAX = 200


def invalid(field: str, constraint: str, message: str) -> AppError:
    return AppError(
        ErrorCode.INVALID_INPUT, message, extensions={"field": field, "constraint": constraint}
    )


def note_id(value: str, field: str = "id") -> str:
    if len(value) > 64 or not NOTE_ID.match(value):
        raise invalid(field, "format", f"{field} must look like notes:<id>")
    return value


def _length(field: str, value: str, maximum: int) -> str:
    if not 1 <= len(value) <= maximum:
        raise invalid(field, "length", f"{field} must be 1 to {maximum} characters")
    return value


def title(value: str) -> str:
    _length("title", value, TITLE_MAX)
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise invalid("title", "no_control_characters", "title must not contain control characters")
    if not value.strip():
        raise invalid("title", "length", "title must not be blank")
    return value


def content(value: str) -> str:
    return _length("content", value, CONTENT_MAX)


def author(value: str, field: str = "author") -> str:
    _length(field, value, AUTHOR_MAX)
    if not USERNAME.match(value):
        raise invalid(
            field, "username", f"{field} must be a user id: letters, digits and . _ @ | : + -"
        )
    return value


def limit(value: int) -> int:
    if not 1 <= value <= LIMIT_MAX:
        raise invalid("limit", "range", f"limit must be between 1 and {LIMIT_MAX}")
    return value


def offset(value: int) -> int:
    if not 0 <= value <= OFFSET_MAX:
        raise invalid("offset", "range", f"offset must be between 0 and {OFFSET_MAX}")
    return value


def search_query(value: str) -> str:
    if not value.strip():
        raise invalid("query", "length", "query must not be blank")
    return _length("query", value, SEARCH_MAX)
