"""The note store as the API uses it: the same operations, with a plan for database outages.

- Reads of notes by id fall back to a cache of recently read notes, bounded in bytes (a note's
  content is what clients wrote) and in count; the caller learns that the answer came from the
  cache, so the response can say so.
- Lists (offset and keyset pages) and searches cannot be answered from a partial cache: they
  fail as DATABASE_ERROR.
- Writes wait for the database in the WriteGate (bounded in count and time) and are
  acknowledged only after they commit. A create that is retried after an ambiguous failure
  reuses its id, so it cannot be applied twice.
- While the database is down a prober pings it often, so recovery is noticed within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import structlog

from pcf_api.errors import AppError, ErrorCode, StoreConflict, reason_of
from pcf_api.resilience import Availability, WriteGate
from pcf_api.sizing import BytesCache, text_bytes
from pcf_api.store.database import Database, is_unavailable
from pcf_api.store.models import Note, new_note_id
from pcf_api.store.notes import Deletion, Key, NotePage, NoteStore, NoteWindow

# structlog's own logger: the store does not depend on pcf_api.observability, which configures it.
log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")


def note_bytes(_: str, note: Note) -> int:
    """A cached note's memory: the tuple, its two datetimes and its strings (the key is
    ``note.id`` itself)."""
    return (
        sys.getsizeof(note)
        + sys.getsizeof(note.created_at)
        + sys.getsizeof(note.updated_at)
        + sum(text_bytes(text) for text in (note.id, note.title, note.content, note.author))
    )


def database_error() -> AppError:
    return AppError(ErrorCode.DATABASE_ERROR, headers={"Retry-After": "5"})


class ResilientNoteStore:
    def __init__(
        self,
        store: NoteStore,
        *,
        cache_size: int,
        cache_bytes: int,
        write_queue_size: int,
        write_wait_seconds: float,
        probe_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.availability = Availability("database", on_down=self._ensure_prober)
        self.gate = WriteGate(
            self.availability,
            capacity=write_queue_size,
            max_wait=write_wait_seconds,
            is_unavailable=is_unavailable,
        )
        self.cache: BytesCache[str, Note] = BytesCache(
            max_bytes=cache_bytes, max_entries=cache_size, size_of=note_bytes
        )
        self.probe_interval = probe_interval
        self._prober: asyncio.Task[None] | None = None

    @property
    def database(self) -> Database:
        return self.store.database

    async def check(self) -> None:
        """The readiness check: a ping that also keeps the availability state current.

        With every pooled connection busy and the database up, there is no ping: it would
        queue behind the requests (and time out under load, taking every replica out of
        service at the peak), while those requests already show that the database answers."""
        if self.availability.is_up and self.database.pool_is_busy():
            return
        try:
            await self.database.ping()
        except Exception as exc:
            if is_unavailable(exc):
                self._went_down(reason_of(exc))
            raise
        self.availability.mark_up()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    async def get_many(self, note_ids: Sequence[str]) -> tuple[dict[str, Note], bool]:
        """Notes by id, and whether they came from the cache because the database is down."""
        if self.availability.is_up:
            try:
                found = await self.store.get_many(note_ids)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._went_down(reason_of(exc))
            else:
                self._remember(found.values())
                return found, False
        cached = {
            note_id: note for note_id in note_ids if (note := self.cache.get(note_id)) is not None
        }
        return cached, True

    async def page(
        self, *, limit: int, offset: int, author: str | None = None, reader: str | None = None
    ) -> NotePage:
        page = await self._read(
            lambda: self.store.page(limit=limit, offset=offset, author=author, reader=reader)
        )
        self._remember(page.notes)
        return page

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
        window = await self._read(
            lambda: self.store.window(
                count=count,
                after=after,
                before=before,
                backward=backward,
                author=author,
                reader=reader,
                total=total,
            )
        )
        self._remember(window.notes)
        return window

    async def search(self, text: str, *, limit: int, reader: str | None = None) -> list[Note]:
        notes = await self._read(lambda: self.store.search(text, limit=limit, reader=reader))
        self._remember(notes)
        return notes

    async def create(
        self,
        *,
        title: str,
        content: str,
        author: str,
        note_id: str | None = None,
        owner: str | None = None,
    ) -> Note:
        """Insert, waiting out a database outage; ``owner`` as in ``NoteStore.create``."""
        note_id = note_id or new_note_id()
        attempts = 0

        async def insert() -> Note:
            nonlocal attempts
            attempts += 1
            try:
                return await self.store.create(
                    title=title, content=content, author=author, note_id=note_id, owner=owner
                )
            except StoreConflict:
                # Only a retry can collide with its own id: the first attempt did commit.
                existing = await self.store.get(note_id) if attempts > 1 else None
                if existing is None:
                    raise
                return existing

        note = await self._write(insert)
        self.cache.put(note.id, note)
        return note

    async def update(
        self, note_id: str, *, title: str | None = None, content: str | None = None
    ) -> Note | None:
        note = await self._write(lambda: self.store.update(note_id, title=title, content=content))
        if note is not None:
            self.cache.put(note.id, note)
        return note

    async def delete(self, note_id: str) -> Deletion:
        deletion = await self._write(lambda: self.store.delete(note_id))
        self.cache.pop(note_id)
        return deletion

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        if not self.availability.is_up:
            raise database_error()
        try:
            return await read()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._went_down(reason_of(exc))
            raise database_error() from None

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T:
        return await self.gate.run(write)

    def _remember(self, notes: Iterable[Note]) -> None:
        for note in notes:
            self.cache.put(note.id, note)

    def _went_down(self, reason: str) -> None:
        self.availability.mark_down(reason)

    def _ensure_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe(), name="database-recovery-probe")

    async def _probe(self) -> None:
        """Ping until the database answers, then let waiting writes through."""
        while not self.availability.is_up:
            try:
                await self.database.ping()
            except Exception:  # noqa: BLE001 - still down; try again shortly
                await asyncio.sleep(self.probe_interval)
            else:
                self.availability.mark_up()
