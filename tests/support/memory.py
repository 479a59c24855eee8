"""What Python really allocates, to check the caches' memory estimates against."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable


def retained_bytes(fill: Callable[[], object]) -> int:
    """Bytes still allocated after ``fill`` ran, as tracemalloc counts them (what it returns is
    kept alive until the count is taken)."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = fill()
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return current
