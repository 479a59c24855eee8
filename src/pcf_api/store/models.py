"""The records the store hands out and the events it announces: plain immutable values."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

NOTE_ID_PREFIX = "notes:"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_note_id() -> str:
    """``notes:`` + a ULID: 48-bit millisecond time then 80 random bits, Crockford base32.

    Sorting ids sorts notes by creation time, which keeps index inserts at the end of the B-tree.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_CROCKFORD[index])
    return NOTE_ID_PREFIX + "".join(reversed(chars))


class Note(NamedTuple):
    """A note as stored. A named tuple: immutable like a frozen dataclass, and cheaper to build,
    which counts when every list query builds dozens (docs/benchmarks.md, change 4)."""

    id: str
    title: str
    content: str
    author: str
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "content": self.content,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Note:
        return cls(
            id=data["id"],
            title=data["title"],
            content=data["content"],
            author=data["author"],
            created_at=_utc(datetime.fromisoformat(data["created_at"])),
            updated_at=_utc(datetime.fromisoformat(data["updated_at"])),
        )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class EventKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """What subscribers receive. It carries the note itself, so no replica has to read it back."""

    kind: EventKind
    note_id: str
    note: Note | None = None
    readers: tuple[str, ...] | None = None
    """For a deletion: who could read the note, so only they learn of it. None: not known."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "note_id": self.note_id,
            "note": self.note.to_json() if self.note is not None else None,
            "readers": list(self.readers) if self.readers is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoteEvent:
        note = data.get("note")
        return cls(
            kind=EventKind(data["kind"]),
            note_id=data["note_id"],
            note=Note.from_json(note) if note is not None else None,
            readers=tuple(readers) if (readers := data.get("readers")) is not None else None,
        )
