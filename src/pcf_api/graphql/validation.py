"""Input rules of the notes API. A violation is INVALID_INPUT naming the field and the rule."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pcf_api.errors import AppError, ErrorCode
from pcf_api.store.models import NOTE_ID_PREFIX
from pcf_api.store.notes import Key

NOTE_ID = re.compile(r"^[a-z_]+:[a-zA-Z0-9_-]+$")
# A user id as identity providers issue them: "alice", "auth0|5f1c…", "alice@example.com",
# "google-oauth2|1234", "urn:user:42". No spaces, quotes or control characters.
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@|:+-]*$")

TITLE_MAX = 200
CONTENT_MAX = 10_000
AUTHOR_MAX = 100
LIMIT_MAX = 100
LIMIT_DEFAULT = 10  # a page's size when neither limit, first nor last is given
OFFSET_MAX = 10_000
SEARCH_MAX = 200
CURSOR_MAX = 128
# The integer arguments of the list fields and what each allows: ``first`` and ``last`` may be 0
# (pageInfo and totalCount only), as the Relay connection spec allows.
RANGES: Mapping[str, tuple[int, int]] = {
    "limit": (1, LIMIT_MAX),
    "offset": (0, OFFSET_MAX),
    "first": (0, LIMIT_MAX),
    "last": (0, LIMIT_MAX),
}

# A cursor is base64url (unpadded) of this prefix, the note's creation time in microseconds
# since the epoch and its id: "pcf1:<micros>:notes:<ulid>". The prefix versions the format, so
# a later one can be told apart (and this one refused) should the list order ever change.
CURSOR_PREFIX = "pcf1:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MICROS_MAX = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // _MICROSECOND


def invalid(field: str, constraint: str, message: str) -> AppError:
    return AppError(
        ErrorCode.INVALID_INPUT, message, extensions={"field": field, "constraint": constraint}
    )


def note_id(value: str, field: str = "id") -> str:
    if len(value) > 64 or not NOTE_ID.match(value):
        raise invalid(field, "format", f"{field} must look like notes:<id>.")
    return value


def _length(field: str, value: str, maximum: int) -> str:
    if not 1 <= len(value) <= maximum:
        raise invalid(field, "length", f"{field} must be 1 to {maximum} characters.")
    return value


def title(value: str) -> str:
    _length("title", value, TITLE_MAX)
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise invalid(
            "title", "no_control_characters", "title must not contain control characters."
        )
    if not value.strip():
        raise invalid("title", "length", "title must not be blank.")
    return value


def content(value: str) -> str:
    return _length("content", value, CONTENT_MAX)


def author(value: str, field: str = "author") -> str:
    _length(field, value, AUTHOR_MAX)
    if not USERNAME.match(value):
        raise invalid(
            field,
            "username",
            f"{field} must be a user id: letters, digits and . _ @ | : + -, "
            "a letter or digit first.",
        )
    return value


def in_range(value: int, field: str) -> int:
    """``value`` of the integer argument ``field`` (a key of ``RANGES``), within its range."""
    low, high = RANGES[field]
    if not low <= value <= high:
        raise invalid(field, "range", f"{field} must be between {low} and {high}, not {value}.")
    return value


def limit(value: int) -> int:
    return in_range(value, "limit")


def offset(value: int) -> int:
    return in_range(value, "offset")


def count(value: int, field: str) -> int:
    """``first`` or ``last``."""
    return in_range(value, field)


def encode_cursor(key: Key) -> str:
    raw = f"{CURSOR_PREFIX}{(key.created_at - _EPOCH) // _MICROSECOND}:{key.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor(value: str, field: str) -> Key:
    """The key an ``after`` or ``before`` cursor stands for. Anything this service did not hand
    out as a note cursor (garbage, an old ``offset:`` cursor, another type's) is INVALID_INPUT
    naming the field; only the canonical spelling of a cursor is accepted."""
    key = _decode_cursor(value) if len(value) <= CURSOR_MAX else None
    if key is None or encode_cursor(key) != value:
        raise invalid(
            field, "cursor", f"{field} is not a cursor of this list: send back one it handed out."
        )
    return key


def _decode_cursor(value: str) -> Key | None:
    try:
        padded = value + "=" * (-len(value) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not raw.startswith(CURSOR_PREFIX):
        return None
    micros, _, note = raw.removeprefix(CURSOR_PREFIX).partition(":")
    if not (micros.isdigit() and len(micros) <= 16 and int(micros) <= _MICROS_MAX):
        return None
    if not note.startswith(NOTE_ID_PREFIX) or len(note) > 64 or not NOTE_ID.match(note):
        return None
    return Key(_EPOCH + int(micros) * _MICROSECOND, note)


def search_query(value: str) -> str:
    if not value.strip():
        raise invalid("query", "length", "query must not be blank.")
    return _length("query", value, SEARCH_MAX)
