"""compat.sqlalchemy: SQLAlchemy's greenlet bridge, checked at start-up."""

from __future__ import annotations

import pytest
import sqlalchemy.util
from sqlalchemy import create_engine, text

from pcf_api.compat import CompatibilityError
from pcf_api.compat import sqlalchemy as compat


def test_the_self_check_passes_on_the_installed_version() -> None:
    compat.self_check()


def test_a_version_outside_the_tested_range_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pcf_api.compat.version", lambda _: "2.0.0")
    with pytest.raises(CompatibilityError, match=r"sqlalchemy 2\.0\.0"):
        compat.self_check()


def test_a_missing_bridge_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sqlalchemy.util, "greenlet_spawn")
    with pytest.raises(CompatibilityError, match="greenlet_spawn"):
        compat.self_check()


def test_a_bridge_that_is_no_coroutine_function_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlalchemy.util, "greenlet_spawn", lambda function, *args: None)
    with pytest.raises(CompatibilityError, match="greenlet_spawn"):
        compat.self_check()


@pytest.mark.anyio
async def test_the_bridge_runs_synchronous_work_and_returns_its_result() -> None:
    engine = create_engine("sqlite://")
    try:

        def work() -> int:
            with engine.connect() as connection:
                return int(connection.execute(text("SELECT 41 + 1")).scalar_one())

        assert await compat.greenlet_spawn(work) == 42
    finally:
        engine.dispose()
