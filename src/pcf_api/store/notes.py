"""NoteStore: every query the API makes, on SQLAlchemy Core, one round-trip each where possible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pcf_api.store.models import Note, new_note_id
from pcf_api.store.tables import notes

_COLUMNS = (
    notes.c.id,
    notes.c.title,
    notes.c.content,
    notes.c.author,
    notes.c.created_at,
    notes.c.updated_at,
)
_NEWEST_FIRST = (notes.c.created_at.desc(), notes.c.id.desc())


@dataclass(frozen=True, slots=True)
class NotePage:
    notes: list[Note]
    total: int


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _note(row: Any) -> Note:
    return Note(
        id=row.id,
        title=row.title,
        content=row.content,
        author=row.author,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class NoteStore:
    """Reads and writes notes. Raises SQLAlchemy errors as they come; callers decide policy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, note_id: str) -> Note | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(select(*_COLUMNS).where(notes.c.id == note_id))
            row = result.first()
        return _note(row) if row is not None else None

    async def get_many(self, note_ids: Sequence[str]) -> dict[str, Note]:
        """Notes by id in one SELECT (the DataLoader's batch function)."""
        if not note_ids:
            return {}
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(*_COLUMNS).where(notes.c.id.in_(list(dict.fromkeys(note_ids))))
            )
            return {row.id: _note(row) for row in result}

    async def page(self, *, limit: int, offset: int, author: str | None = None) -> NotePage:
        """A page, newest first, and the total count — in one round-trip (a window count)."""
        total_column = func.count().over().label("total")
        query = select(*_COLUMNS, total_column).order_by(*_NEWEST_FIRST).limit(limit).offset(offset)
        count_query = select(func.count()).select_from(notes)
        if author is not None:
            query = query.where(notes.c.author == author)
            count_query = count_query.where(notes.c.author == author)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            if rows:
                return NotePage([_note(row) for row in rows], int(rows[0].total))
            # Past the end the window count has no row to ride on: ask separately.
            total = (await connection.execute(count_query)).scalar_one() if offset else 0
        return NotePage([], int(total))

    async def search(self, text: str, *, limit: int) -> list[Note]:
        """Case-insensitive substring match over title and content, newest first."""
        pattern = _like_pattern(text)
        query = (
            select(*_COLUMNS)
            .where(
                or_(
                    notes.c.title.ilike(pattern, escape="\\"),
                    notes.c.content.ilike(pattern, escape="\\"),
                )
            )
            .order_by(*_NEWEST_FIRST)
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            return [_note(row) for row in await connection.execute(query)]

    async def create(
        self, *, title: str, content: str, author: str, note_id: str | None = None
    ) -> Note:
        """Insert a note. Pass ``note_id`` to retry a create whose outcome is unknown: a
        second insert of the same id fails instead of duplicating the note."""
        now = datetime.now(UTC)
        note = Note(note_id or new_note_id(), title, content, author, now, now)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(notes).values(
                    id=note.id,
                    title=title,
                    content=content,
                    author=author,
                    created_at=now,
                    updated_at=now,
                )
            )
        return note

    async def update(
        self, note_id: str, *, title: str | None = None, content: str | None = None
    ) -> Note | None:
        """Change the given fields; None when the note does not exist."""
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if title is not None:
            values["title"] = title
        if content is not None:
            values["content"] = content
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(notes).where(notes.c.id == note_id).values(**values).returning(*_COLUMNS)
            )
            row = result.first()
        return _note(row) if row is not None else None

    async def delete(self, note_id: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(notes).where(notes.c.id == note_id))
        return bool(result.rowcount)
