"""NoteStore: every query the API makes, on SQLAlchemy Core, one round-trip each where possible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql import ColumnElement, FromClause, Select

from pcf_api.store.database import Database
from pcf_api.store.models import Note, new_note_id
from pcf_api.store.tables import note_relationships, notes

# The relation a creator gets (``pcf_api.auth.policy.Relation.OWNER``; the store sits below auth).
OWNER = "owner"

_COLUMNS = (
    notes.c.id,
    notes.c.title,
    notes.c.content,
    notes.c.author,
    notes.c.created_at,
    notes.c.updated_at,
)
_NEWEST_FIRST = (notes.c.created_at.desc(), notes.c.id.desc())


def _readable_by_reader(table: FromClause = notes) -> Any:
    """The note has a relationship with the reader. Every relation grants read (owner, writer,
    reader: see ``pcf_api.auth.policy``), so any row will do; it is one lookup in the primary
    key of ``note_relationships``."""
    return exists().where(
        note_relationships.c.note_id == table.c.id,
        note_relationships.c.subject == bindparam("reader"),
    )


def _filtered(
    statement: Select[Any], *, by_author: bool, by_reader: bool, table: FromClause = notes
) -> Select[Any]:
    if by_author:
        statement = statement.where(table.c.author == bindparam("author"))
    if by_reader:
        statement = statement.where(_readable_by_reader(table))
    return statement


def _count_statement(*, by_author: bool, by_reader: bool) -> Select[Any]:
    """How many notes match. All the notes a reader may read are counted from the reader's
    relationship rows alone (an index-only scan): every row belongs to an existing note, since
    rows are written and deleted in the same transaction as their note."""
    if by_reader and not by_author:
        return (
            select(func.count())
            .select_from(note_relationships)
            .where(note_relationships.c.subject == bindparam("reader"))
        )
    return _filtered(
        select(func.count()).select_from(notes), by_author=by_author, by_reader=by_reader
    )


def _page_statement(*, by_author: bool, by_reader: bool) -> Select[Any]:
    """A page with the total riding on every row as an uncorrelated scalar subquery: the
    database computes it once, from an index. (A window ``count(*) OVER ()`` would make it read
    and sort every matching row.) Built once, so SQLAlchemy reuses its compiled form."""
    count = _count_statement(by_author=by_author, by_reader=by_reader)
    page = _filtered(select(*_COLUMNS), by_author=by_author, by_reader=by_reader)
    return (
        page.add_columns(count.scalar_subquery().label("total"))
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


_VARIANTS = [(by_author, by_reader) for by_author in (False, True) for by_reader in (False, True)]
_PAGES = {
    variant: _page_statement(by_author=variant[0], by_reader=variant[1]) for variant in _VARIANTS
}
_COUNTS = {
    variant: _count_statement(by_author=variant[0], by_reader=variant[1]) for variant in _VARIANTS
}


class Key(NamedTuple):
    """A note's place in every list: newest first by creation time, the id breaking ties (ids
    are time-ordered too, but only to the millisecond). Keyset pages continue from one."""

    created_at: datetime
    id: str

    @classmethod
    def of(cls, note: Note) -> Key:
        return cls(note.created_at, note.id)


class _Window(NamedTuple):
    """Which keyset statement: the filters, the bounds given, the direction, the total."""

    by_author: bool
    by_reader: bool
    after: bool
    before: bool
    backward: bool
    total: bool


_AFTER = tuple_(
    bindparam("after_at", type_=DateTime(timezone=True)), bindparam("after_id", type_=String)
)
_BEFORE = tuple_(
    bindparam("before_at", type_=DateTime(timezone=True)), bindparam("before_id", type_=String)
)


def _key(table: FromClause) -> ColumnElement[Any]:
    return tuple_(table.c.created_at, table.c.id)


def _beyond(variant: _Window, *, above: bool) -> ColumnElement[Any]:
    """Whether a matching note lies at or past a bound: at or newer than ``after``
    (``above``), at or older than ``before``. One index probe."""
    beyond = notes.alias("beyond")
    condition = _key(beyond) >= _AFTER if above else _key(beyond) <= _BEFORE
    # The nearest such note's id, ordered from the bound outward, so the planner walks the index
    # from there. (PostgreSQL drops ORDER BY and LIMIT inside EXISTS, and for a bare EXISTS may
    # pick a sequential scan: cheap while the first row matches, not when a filter skips many.)
    nearest = (
        (beyond.c.created_at.asc(), beyond.c.id.asc())
        if above
        else (beyond.c.created_at.desc(), beyond.c.id.desc())
    )
    probe = _filtered(
        select(beyond.c.id).where(condition),
        by_author=variant.by_author,
        by_reader=variant.by_reader,
        table=beyond,
    )
    nearest_id = probe.order_by(*nearest).limit(1).scalar_subquery()
    return nearest_id.is_not(None).label("above" if above else "below")


def _extras(variant: _Window) -> list[ColumnElement[Any]]:
    """The answers riding on every row of a window: the bounds' neighbours, the total."""
    columns = []
    if variant.after:
        columns.append(_beyond(variant, above=True))
    if variant.before:
        columns.append(_beyond(variant, above=False))
    if variant.total:
        count = _count_statement(by_author=variant.by_author, by_reader=variant.by_reader)
        columns.append(count.scalar_subquery().label("total"))
    return columns


@cache
def _window_statement(variant: _Window) -> Select[Any]:
    """Up to ``limit`` notes past ``after`` and before ``before`` from the newest (or, going
    backward, the oldest) end: a range scan of the (created_at, id) index, wherever the window
    starts. Built once per variant, so SQLAlchemy reuses its compiled form."""
    page = _filtered(select(*_COLUMNS), by_author=variant.by_author, by_reader=variant.by_reader)
    if variant.after:
        page = page.where(_key(notes) < _AFTER)
    if variant.before:
        page = page.where(_key(notes) > _BEFORE)
    order = (notes.c.created_at.asc(), notes.c.id.asc()) if variant.backward else _NEWEST_FIRST
    return page.add_columns(*_extras(variant)).order_by(*order).limit(bindparam("limit"))


@cache
def _extras_statement(variant: _Window) -> Select[Any]:
    """The extras alone, for a window without rows to carry them."""
    return select(*_extras(variant))


_BY_ID = select(*_COLUMNS).where(notes.c.id == bindparam("id"))
_BY_IDS = select(*_COLUMNS).where(notes.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True, slots=True)
class NotePage:
    notes: list[Note]
    total: int


@dataclass(frozen=True, slots=True)
class NoteWindow:
    """A keyset page, newest first, and what lies around it."""

    notes: list[Note]
    more: bool
    """More matching notes past the page in the direction it was read."""
    above: bool
    """A matching note at or newer than ``after`` (False without ``after``)."""
    below: bool
    """A matching note at or older than ``before`` (False without ``before``)."""
    total: int | None
    """How many notes match in all, when asked for."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """Whether the note existed, and who had a relationship with it (so who could read it;
    empty when relationships are kept elsewhere, in SpiceDB)."""

    found: bool
    readers: tuple[str, ...] = ()


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _note(row: Any) -> Note:
    note_id, title, content, author, created_at, updated_at = row[:6]  # _COLUMNS, in order
    return Note(note_id, title, content, author, _utc(created_at), _utc(updated_at))


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class NoteStore:
    """Reads and writes notes. Failures are the store's typed errors (``pcf_api.errors``,
    raised by ``Database``); callers decide policy.

    Each operation is one unit of work on ``Database`` (see there why): the functions below
    the class, run whole, on one connection."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get(self, note_id: str) -> Note | None:
        return await self.database.read(partial(_get, note_id))

    async def get_many(self, note_ids: Sequence[str]) -> dict[str, Note]:
        """Notes by id in one SELECT (the DataLoader's batch function)."""
        if not note_ids:
            return {}
        return await self.database.read(partial(_get_many, list(dict.fromkeys(note_ids))))

    async def page(
        self, *, limit: int, offset: int, author: str | None = None, reader: str | None = None
    ) -> NotePage:
        """A page, newest first, and the total count, in one round trip. With ``reader``, only
        notes the reader has a relationship with (the local authorization backend's rows)."""
        parameters: dict[str, Any] = {"limit": limit, "offset": offset}
        if author is not None:
            parameters["author"] = author
        if reader is not None:
            parameters["reader"] = reader
        variant = (author is not None, reader is not None)
        return await self.database.read(partial(_page, variant, parameters))

    async def window(
        self,
        *,
        count: int,
        after: Key | None = None,
        before: Key | None = None,
        backward: bool = False,
        author: str | None = None,
        reader: str | None = None,
        total: bool = False,
    ) -> NoteWindow:
        """Up to ``count`` notes older than ``after`` and newer than ``before``: the newest of
        them, or with ``backward`` the oldest; in one round trip (two when the window is empty
        and something beyond it is asked). Never an OFFSET: a page deep in the list costs what
        the first one costs, and notes created or deleted meanwhile shift nothing."""
        variant = _Window(
            by_author=author is not None,
            by_reader=reader is not None,
            after=after is not None,
            before=before is not None,
            backward=backward,
            total=total,
        )
        parameters: dict[str, Any] = {"limit": count + 1}
        if author is not None:
            parameters["author"] = author
        if reader is not None:
            parameters["reader"] = reader
        if after is not None:
            parameters["after_at"], parameters["after_id"] = after
        if before is not None:
            parameters["before_at"], parameters["before_id"] = before
        return await self.database.read(partial(_window, variant, count, parameters))

    async def search(self, text: str, *, limit: int, reader: str | None = None) -> list[Note]:
        """Case-insensitive substring match over title and content, newest first; with
        ``reader``, among the notes the reader has a relationship with."""
        pattern = _like_pattern(text)
        query = _filtered(
            select(*_COLUMNS).where(
                or_(
                    notes.c.title.ilike(pattern, escape="\\"),
                    notes.c.content.ilike(pattern, escape="\\"),
                )
            ),
            by_author=False,
            by_reader=reader is not None,
        )
        query = query.order_by(*_NEWEST_FIRST).limit(limit)
        return await self.database.read(partial(_notes, query, {"reader": reader}))

    async def create(
        self,
        *,
        title: str,
        content: str,
        author: str,
        note_id: str | None = None,
        owner: str | None = None,
    ) -> Note:
        """Insert a note. Pass ``note_id`` to retry a create whose outcome is unknown: a
        second insert of the same id fails instead of duplicating the note. With ``owner``, the
        owner's relationship row commits in the same transaction, so no note is ever without
        one (the local authorization backend)."""
        now = datetime.now(UTC)
        note = Note(note_id or new_note_id(), title, content, author, now, now)
        await self.database.write(partial(_insert, note, owner))
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
        statement = update(notes).where(notes.c.id == note_id).values(**values)
        return await self.database.write(partial(_update, statement.returning(*_COLUMNS)))

    async def delete(self, note_id: str) -> Deletion:
        """Delete a note and, in the same transaction, its local relationship rows."""
        return await self.database.write(partial(_delete, note_id))


def _get(note_id: str, connection: Connection) -> Note | None:
    row = connection.execute(_BY_ID, {"id": note_id}).first()
    return _note(row) if row is not None else None


def _get_many(note_ids: list[str], connection: Connection) -> dict[str, Note]:
    return {row.id: _note(row) for row in connection.execute(_BY_IDS, {"ids": note_ids})}


def _page(
    variant: tuple[bool, bool], parameters: dict[str, Any], connection: Connection
) -> NotePage:
    rows = connection.execute(_PAGES[variant], parameters).all()
    if rows:
        return NotePage([_note(row) for row in rows], int(rows[0].total))
    if not parameters["offset"]:
        return NotePage([], 0)
    # Past the end the count has no row to ride on: ask separately.
    return NotePage([], int(connection.execute(_COUNTS[variant], parameters).scalar_one()))


def _window(
    variant: _Window, count: int, parameters: dict[str, Any], connection: Connection
) -> NoteWindow:
    rows = connection.execute(_window_statement(variant), parameters).all()
    found = [_note(row) for row in rows[:count]]
    if variant.backward:
        found.reverse()
    carrier: Any = rows[0] if rows else None
    if carrier is None and (variant.after or variant.before or variant.total):
        carrier = connection.execute(_extras_statement(variant), parameters).one()
    return NoteWindow(
        notes=found,
        more=len(rows) > count,
        above=bool(variant.after and carrier.above),
        below=bool(variant.before and carrier.below),
        total=int(carrier.total) if variant.total else None,
    )


def _notes(query: Select[Any], parameters: dict[str, Any], connection: Connection) -> list[Note]:
    return [_note(row) for row in connection.execute(query, parameters)]


def _insert(note: Note, owner: str | None, connection: Connection) -> None:
    connection.execute(insert(notes).values(note._asdict()))  # its fields are the columns
    if owner is not None:
        connection.execute(
            insert(note_relationships).values(note_id=note.id, subject=owner, relation=OWNER)
        )


def _update(statement: Any, connection: Connection) -> Note | None:
    row = connection.execute(statement).first()
    return _note(row) if row is not None else None


def _delete(note_id: str, connection: Connection) -> Deletion:
    result = connection.execute(delete(notes).where(notes.c.id == note_id))
    removed = connection.execute(
        delete(note_relationships)
        .where(note_relationships.c.note_id == note_id)
        .returning(note_relationships.c.subject)
    )
    readers = tuple(sorted(removed.scalars()))
    return Deletion(found=bool(result.rowcount), readers=readers)
