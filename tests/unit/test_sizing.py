"""BytesCache: bounded in estimated bytes (and optionally count); the estimates are upper bounds."""

from __future__ import annotations

import sys

import orjson
import pytest

from pcf_api.sizing import BytesCache, text_bytes
from support.memory import retained_bytes

EMOJI = "\N{GRINNING FACE}"


def by_length(key: str, value: str) -> int:
    return len(value)


def test_text_bytes_counts_four_bytes_a_character_once_one_emoji_is_in_it() -> None:
    mixed = "a" * 999 + EMOJI
    assert text_bytes(mixed) >= 4 * 1000  # UTF-8 would say 1 003
    assert text_bytes("a" * 1000) == sys.getsizeof("a" * 1000)


def test_text_bytes_includes_the_utf8_copy_a_response_leaves_on_the_string() -> None:
    text = EMOJI * 1000
    estimate = text_bytes(text)
    orjson.dumps(text)  # encodes it: CPython keeps the UTF-8 form on the string from now on
    assert estimate >= sys.getsizeof(text)


def test_text_bytes_accepts_lone_surrogates() -> None:
    assert text_bytes("\ud800") > sys.getsizeof("")


@pytest.mark.parametrize("ttl", [None, 60.0])
def test_the_fixed_cost_per_entry_covers_what_the_cache_allocates(ttl: float | None) -> None:
    count = 21_846  # just past a growth of the cache's tables: their least favourable point
    keys = [f"key-{index:08d}" for index in range(count)]
    values = [object() for _ in range(count)]
    cache: BytesCache[str, object] = BytesCache(
        max_bytes=1 << 40, size_of=lambda key, value: 0, ttl=ttl
    )

    def fill() -> BytesCache[str, object]:
        for key, value in zip(keys, values, strict=True):
            cache.put(key, value)
        return cache

    assert retained_bytes(fill) <= cache.size_bytes


def test_evicts_the_least_recently_used_to_stay_within_its_bytes() -> None:
    cache: BytesCache[str, str] = BytesCache(max_bytes=10_000, size_of=by_length)
    for index in range(100):
        cache.put(str(index), "x" * 1000)
        assert cache.size_bytes <= 10_000
    assert len(cache) == 10_000 // cache.entry_bytes("0", "x" * 1000)
    assert cache.get("0") is None
    assert cache.get("99") == "x" * 1000


def test_a_value_over_the_whole_budget_is_not_kept_and_drops_the_older_one() -> None:
    cache: BytesCache[str, str] = BytesCache(max_bytes=2000, size_of=by_length)
    cache.put("note", "old")
    assert not cache.put("note", "x" * 2000)
    assert cache.get("note") is None  # never the outdated value


def test_also_bounded_in_entries_when_asked() -> None:
    cache: BytesCache[str, str] = BytesCache(max_bytes=1 << 30, size_of=by_length, max_entries=3)
    for key in "abcd":
        cache.put(key, key)
    assert cache.keys() == ["b", "c", "d"]


def test_zero_bytes_or_zero_entries_turns_it_off() -> None:
    for cache in (
        BytesCache[str, str](max_bytes=0, size_of=by_length),
        BytesCache[str, str](max_bytes=1000, size_of=by_length, max_entries=0),
    ):
        assert not cache.enabled
        assert not cache.put("a", "a")
        assert len(cache) == 0


def test_entries_expire_after_their_ttl() -> None:
    now = [0.0]
    cache: BytesCache[str, str] = BytesCache(
        max_bytes=1 << 20, size_of=by_length, ttl=10, timer=lambda: now[0]
    )
    cache.put("a", "a")
    now[0] = 11
    assert cache.get("a") is None
    assert cache.keys() == []
