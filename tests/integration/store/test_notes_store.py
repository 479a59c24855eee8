"""NoteStore against SQLite and PostgreSQL: what the API relies on, query by query."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import event

from pcf_api.store.models import NOTE_ID_PREFIX
from pcf_api.store.notes import NoteStore

pytestmark = pytest.mark.anyio


async def test_create_then_get_returns_the_same_note_in_utc(store: NoteStore) -> None:
    created = await store.create(title="Title", content="Body", author="alice")
    assert created.id.startswith(NOTE_ID_PREFIX)
    fetched = await store.get(created.id)
    assert fetched is not None
    assert (fetched.title, fetched.content, fetched.author) == ("Title", "Body", "alice")
    assert fetched.created_at.tzinfo is not None
    assert fetched.created_at.utcoffset() == UTC.utcoffset(None)
    assert abs((fetched.created_at - created.created_at).total_seconds()) < 0.001


async def test_get_of_an_unknown_id_is_none(store: NoteStore) -> None:
    assert await store.get("notes:unknown") is None


async def test_pages_are_newest_first_with_the_total_in_one_query(store: NoteStore) -> None:
    ids = [(await store.create(title=f"n{i}", content="c", author="a")).id for i in range(5)]
    statements: list[str] = []
    for engine in store.database.statement_engines:
        event.listen(engine, "before_cursor_execute", _record(statements))

    page = await store.page(limit=2, offset=1)

    assert [note.id for note in page.notes] == [ids[3], ids[2]]
    assert page.total == 5
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_a_page_past_the_end_is_empty_but_still_counts(store: NoteStore) -> None:
    for i in range(3):
        await store.create(title=f"n{i}", content="c", author="a")
    page = await store.page(limit=10, offset=50)
    assert (page.notes, page.total) == ([], 3)
    empty = await store.page(limit=10, offset=0, author="nobody")
    assert (empty.notes, empty.total) == ([], 0)


async def test_pages_by_author_count_only_that_author(store: NoteStore) -> None:
    await store.create(title="a1", content="c", author="alice")
    await store.create(title="b1", content="c", author="bob")
    await store.create(title="a2", content="c", author="alice")
    page = await store.page(limit=10, offset=0, author="alice")
    assert [note.title for note in page.notes] == ["a2", "a1"]
    assert page.total == 2


async def test_search_is_case_insensitive_over_title_and_content(store: NoteStore) -> None:
    await store.create(title="Shopping LIST", content="milk", author="a")
    await store.create(title="Ideas", content="a list of things", author="a")
    await store.create(title="Other", content="nothing", author="a")
    found = await store.search("List", limit=10)
    assert sorted(note.title for note in found) == ["Ideas", "Shopping LIST"]
    assert len(await store.search("list", limit=1)) == 1


async def test_search_treats_wildcards_literally(store: NoteStore) -> None:
    await store.create(title="100% sure", content="x", author="a")
    await store.create(title="1000 sure", content="x", author="a")
    await store.create(title="a_b", content="x", author="a")
    await store.create(title="axb", content="x", author="a")
    assert [n.title for n in await store.search("0%", limit=10)] == ["100% sure"]
    assert [n.title for n in await store.search("a_b", limit=10)] == ["a_b"]


async def test_get_many_is_one_select_for_many_ids(store: NoteStore) -> None:
    ids = [(await store.create(title=f"n{i}", content="c", author="a")).id for i in range(4)]
    statements: list[str] = []
    for engine in store.database.statement_engines:
        event.listen(engine, "before_cursor_execute", _record(statements))
    found = await store.get_many([*ids, ids[0], "notes:missing"])
    assert set(found) == set(ids)
    assert len(statements) == 1
    assert await store.get_many([]) == {}


async def test_update_changes_only_the_given_fields(store: NoteStore) -> None:
    note = await store.create(title="t", content="c", author="a")
    await asyncio.sleep(0.01)
    updated = await store.update(note.id, content="new")
    assert updated is not None
    assert (updated.title, updated.content) == ("t", "new")
    assert updated.updated_at > note.updated_at
    assert updated.created_at == (await store.get(note.id)).created_at  # type: ignore[union-attr]
    assert await store.update("notes:missing", title="x") is None


async def test_delete_removes_once(store: NoteStore) -> None:
    note = await store.create(title="t", content="c", author="a")
    assert (await store.delete(note.id)).found is True
    assert await store.get(note.id) is None
    assert (await store.delete(note.id)).found is False


async def test_note_ids_sort_by_creation(store: NoteStore) -> None:
    ids = []
    for i in range(3):
        ids.append((await store.create(title=f"n{i}", content="c", author="a")).id)
        await asyncio.sleep(0.002)
    assert ids == sorted(ids)


def _record(statements: list[str]) -> Callable[..., None]:
    """A before_cursor_execute listener collecting each statement sent to the database."""

    def listener(*args: Any) -> None:
        statements.append(args[2])

    return listener
