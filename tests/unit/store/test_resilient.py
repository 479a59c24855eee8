"""The read cache's estimate of a note (spec: store/resilient.py note_bytes)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pcf_api.store.models import Note, new_note_id
from pcf_api.store.resilient import note_bytes
from support.memory import retained_bytes

EMOJI = "\N{GRINNING FACE}"


def _notes(content: str) -> list[Note]:
    now = datetime.now(UTC)
    notes = [
        Note(new_note_id(), f"title {index}", content + str(index), "alice", now, now)
        for index in range(200)
    ]
    orjson.dumps([note.to_json() for note in notes])  # a response leaves UTF-8 copies behind
    return notes


def test_the_estimate_covers_a_note_of_emoji_after_it_was_sent() -> None:
    kept = retained_bytes(lambda: _notes(EMOJI * 10_000))
    assert kept <= sum(note_bytes(note.id, note) for note in _notes(EMOJI * 10_000))


def test_the_estimate_covers_a_small_ascii_note() -> None:
    kept = retained_bytes(lambda: _notes("hello"))
    assert kept <= sum(note_bytes(note.id, note) for note in _notes("hello"))


def test_one_emoji_makes_a_whole_note_four_bytes_a_character() -> None:
    now = datetime.now(UTC)
    ascii_note = Note("notes:a", "t", "a" * 10_000, "alice", now, now)
    emoji_note = Note("notes:a", "t", "a" * 9_999 + EMOJI, "alice", now, now)
    assert note_bytes("notes:a", emoji_note) - note_bytes("notes:a", ascii_note) >= 3 * 10_000
