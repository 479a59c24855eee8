"""Text the service accepts from clients: what PostgreSQL's ``text`` can hold, on every backend.

PostgreSQL refuses the NUL character, and a lone surrogate is not Unicode at all (it cannot be
encoded as UTF-8). Either would reach the database only to fail there as a server error, so
both are refused where input arrives, the same way whichever database is configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Unstorable:
    """Why a text cannot be stored: a stable constraint name and the offending character."""

    constraint: str
    character: str

    def message(self, field: str) -> str:
        return f"{field} must not contain {self.character}."


NUL = Unstorable("no_nul", "the NUL character (U+0000)")
SURROGATE = Unstorable("valid_unicode", "a lone surrogate (U+D800 to U+DFFF): it is not Unicode")


def unstorable(value: str) -> Unstorable | None:
    """The first reason ``value`` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return NUL if found.group() == "\x00" else SURROGATE
