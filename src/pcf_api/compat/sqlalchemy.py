"""SQLAlchemy's greenlet bridge, which it uses internally and does not publish.

``Database`` (``pcf_api.store.database``) runs each PostgreSQL operation — checkout, its
statements, the return to the pool — as one synchronous function in one greenlet, through the
same ``greenlet_spawn`` that ``AsyncConnection.run_sync`` uses. The published way,
``AsyncEngine.connect()`` then ``run_sync``, takes three greenlets and a task of its own for the
close, a measurable share of a read (docs/benchmarks.md, change 9). ``greenlet_spawn`` lives in
``sqlalchemy.util``, which SQLAlchemy does not document as public API.
"""

from __future__ import annotations

import inspect

import sqlalchemy.util
from sqlalchemy.util import greenlet_spawn

from pcf_api.compat import CompatibilityError, require_version

__all__ = ["SUPPORTED", "greenlet_spawn", "self_check"]

SUPPORTED = ">=2.1.9,<2.2"
"""The SQLAlchemy releases this module was tested on."""


def self_check() -> None:
    """Fail (CompatibilityError) unless SQLAlchemy is a supported release with the bridge."""
    require_version("sqlalchemy", SUPPORTED)
    spawn = getattr(sqlalchemy.util, "greenlet_spawn", None)
    if spawn is None or not inspect.iscoroutinefunction(spawn):
        raise CompatibilityError(
            "sqlalchemy.util.greenlet_spawn is missing or no longer a coroutine function "
            f"(see {__name__})"
        )
