"""NoteStore.window (keyset pages) against SQLite and PostgreSQL, checked against a model: the
list of keys, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from pcf_api.store.notes import Key, NoteStore, NoteWindow
from pcf_api.store.tables import note_relationships, notes

pytestmark = pytest.mark.anyio

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


async def seed(store: NoteStore, count: int, *, same_time: int = 3) -> list[Key]:
    """``count`` notes, ``same_time`` of them sharing each creation time (so the id must break
    ties); every other one by bob and readable by rita. Returned newest first."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        created = START + timedelta(microseconds=i // same_time)
        note_id = f"notes:{i:04d}"
        rows.append(
            {
                "id": note_id,
                "title": f"n{i}",
                "content": "c",
                "author": "bob" if i % 2 else "alice",
                "created_at": created,
                "updated_at": created,
            }
        )
    readable = [
        {"note_id": row["id"], "subject": "rita", "relation": "reader"} for row in rows[::2]
    ]

    def write(connection: object) -> None:
        connection.execute(insert(notes), rows)  # type: ignore[attr-defined]
        connection.execute(insert(note_relationships), readable)  # type: ignore[attr-defined]

    await store.database.write(write)
    return sorted((Key(row["created_at"], row["id"]) for row in rows), reverse=True)


def keys(window: NoteWindow) -> list[Key]:
    return [Key.of(note) for note in window.notes]


async def test_forward_and_backward_windows_follow_the_list(store: NoteStore) -> None:
    model = await seed(store, 11)
    first = await store.window(count=4, total=True)
    assert keys(first) == model[:4]
    assert (first.more, first.above, first.below, first.total) == (True, False, False, 11)

    middle = await store.window(count=4, after=model[3])
    assert keys(middle) == model[4:8]
    assert (middle.more, middle.above) == (True, True)

    end = await store.window(count=4, after=model[7])
    assert keys(end) == model[8:]
    assert end.more is False

    oldest = await store.window(count=4, backward=True)
    assert keys(oldest) == model[-4:]
    assert (oldest.more, oldest.below) == (True, False)

    back = await store.window(count=4, before=model[3], backward=True)
    assert keys(back) == model[:3]
    assert (back.more, back.below) == (False, True)

    both = await store.window(count=10, after=model[1], before=model[6])
    assert keys(both) == model[2:6]
    assert (both.more, both.above, both.below) == (False, True, True)


async def test_empty_windows_still_say_what_lies_beyond(store: NoteStore) -> None:
    model = await seed(store, 5)
    past_the_end = await store.window(count=3, after=model[-1], total=True)
    assert (past_the_end.notes, past_the_end.more, past_the_end.above) == ([], False, True)
    assert past_the_end.total == 5
    nothing = await store.window(count=3, author="nobody", total=True)
    assert (nothing.notes, nothing.more, nothing.total) == ([], False, 0)


async def test_filters_apply_to_the_page_and_to_what_lies_beyond(store: NoteStore) -> None:
    model = await seed(store, 12)
    by_bob = [key for key in model if int(key.id[-4:]) % 2]
    readable = [key for key in model if not int(key.id[-4:]) % 2]

    window = await store.window(count=2, after=by_bob[1], author="bob", total=True)
    assert keys(window) == by_bob[2:4]
    assert (window.more, window.above, window.total) == (True, True, 6)

    window = await store.window(count=3, before=readable[-1], reader="rita", backward=True)
    assert keys(window) == readable[-4:-1]
    assert (window.more, window.below) == (True, True)
    assert (await store.window(count=1, reader="sam", total=True)).total == 0


async def test_a_window_is_one_select(store: NoteStore) -> None:
    model = await seed(store, 6)
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    for engine in store.database.statement_engines:
        event.listen(engine, "before_cursor_execute", record)
    await store.window(count=2, after=model[1], before=model[5], reader="rita", total=True)
    for engine in store.database.statement_engines:
        event.remove(engine, "before_cursor_execute", record)
    (statement,) = statements
    if store.database.dialect_name == "postgresql":  # SQLite's dialect always adds OFFSET 0
        assert "OFFSET" not in statement.upper()
