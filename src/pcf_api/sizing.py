"""Caches bounded in bytes: what an entry costs in memory, and a cache that counts it.

Every cache that holds what clients sent (notes, documents, tokens, the subjects of decisions)
is bounded in bytes, so a client cannot fill memory with large values where a count bound would
allow it. The estimates are honest upper bounds for CPython:

- a ``str`` stores 1, 2 or 4 bytes per character by its widest character (one emoji makes the
  whole string 4 bytes per character), and a non-ASCII string keeps a UTF-8 copy once it has
  been encoded for a response (orjson) or a query (asyncpg): ``text_bytes`` counts both;
- each entry's fixed cost (the cache's own bookkeeping and the wrapper that carries the size)
  was measured with tracemalloc at its least favourable point (just after the cache's tables
  grew) and rounded up; tests/unit/test_sizing.py checks every estimate against tracemalloc.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import Cache, LRUCache, TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LRU_ENTRY_BYTES = 320
"""Fixed cost of one entry of a least-recently-used ``BytesCache``: key slots in its tables,
the recency order and the (value, size) pair."""
TTL_ENTRY_BYTES = 480
"""The same with an expiry time: ``TTLCache`` keeps a link object per entry as well."""


def text_bytes(text: str) -> int:
    """The memory ``text`` takes, with the UTF-8 copy a non-ASCII string acquires once encoded."""
    size = sys.getsizeof(text)
    if not text.isascii():
        size += len(text.encode("utf-8", "surrogatepass")) + 1
    return size


def _entry_size(entry: tuple[object, int]) -> int:
    return entry[1]


class BytesCache(Generic[K, V]):
    """Least recently used out first, bounded by ``max_bytes`` of estimated memory (``size_of``
    an entry's key and value, plus the fixed cost per entry) and, when given, by ``max_entries``.

    With ``ttl`` an entry also expires that many seconds after it was stored. A value larger than
    the whole budget is not stored, and replaces (drops) what was cached under its key, so a
    cache never answers with an older value than the one last offered. ``max_bytes`` or
    ``max_entries`` of 0 turns the cache off."""

    def __init__(
        self,
        *,
        max_bytes: int,
        size_of: Callable[[K, V], int],
        max_entries: int | None = None,
        ttl: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.enabled = max_bytes > 0 and (max_entries is None or max_entries > 0)
        self._size_of = size_of
        self._timed = ttl is not None
        self._overhead = TTL_ENTRY_BYTES if ttl is not None else LRU_ENTRY_BYTES
        bound = max(max_bytes, 1)
        self._entries: Cache[K, tuple[V, int]] = (
            TTLCache(bound, ttl, timer, getsizeof=_entry_size)
            if ttl is not None
            else LRUCache(bound, getsizeof=_entry_size)
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    @property
    def size_bytes(self) -> int:
        """The estimated memory of what is cached now."""
        return int(self._entries.currsize)

    def entry_bytes(self, key: K, value: V) -> int:
        """What caching ``value`` under ``key`` counts against the budget."""
        return self._size_of(key, value) + self._overhead

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V) -> bool:
        """Cache ``value``, evicting the least recently used; False when it was not stored."""
        size = self.entry_bytes(key, value)
        if not self.enabled or size > self.max_bytes:
            self._entries.pop(key, None)
            return False
        self._entries[key] = (value, size)
        if self.max_entries is not None:
            while len(self._entries) > self.max_entries:
                self._entries.popitem()
        return True

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def clear(self) -> None:
        self._entries.clear()

    def keys(self) -> list[K]:
        """The keys cached now (expired ones removed first)."""
        if self._timed and isinstance(self._entries, TTLCache):
            self._entries.expire()
        return list(self._entries)
