"""Hooks around SQL statements (spec: store/statements.py), on a real SQLite engine.

Every statement an engine sends reaches every hook with its text (placeholders, never values),
before it runs; the hook's end is called after the driver returns, with the error when it
failed, and the statement's result or error reaches the caller unchanged. Hooks are dialect
events: the engine keeps no connection-level listener, so connections keep SQLAlchemy's fast
path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine.events import ConnectionEvents, DialectEvents

from pcf_api.store.statements import StatementEnd, observe_statements


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'hooks.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE items (name TEXT NOT NULL)"))
    yield engine
    engine.dispose()


class Recorder:
    """A hook that records what it saw, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, statement: str) -> StatementEnd:
        self.events.append(("start", statement))

        def end(error: BaseException | None) -> None:
            self.events.append(("end", "ok" if error is None else type(error).__name__))

        return end


def test_a_statement_reaches_the_hook_before_it_runs_and_its_end_after(engine: Engine) -> None:
    recorder = Recorder()
    observe_statements(engine, recorder)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": "secret"})
        rows = connection.execute(text("SELECT name FROM items")).all()
    assert rows == [("secret",)]
    assert recorder.events == [
        ("start", "INSERT INTO items (name) VALUES (?)"),
        ("end", "ok"),
        ("start", "SELECT name FROM items"),
        ("end", "ok"),
    ]
    assert "secret" not in repr(recorder.events)


def test_executemany_and_statements_without_parameters_are_observed(engine: Engine) -> None:
    recorder = Recorder()
    observe_statements(engine, recorder)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO items (name) VALUES (:name)"), [{"name": "a"}, {"name": "b"}]
        )
        connection.exec_driver_sql("DELETE FROM items")
    assert [event for event in recorder.events if event[0] == "start"] == [
        ("start", "INSERT INTO items (name) VALUES (?)"),
        ("start", "DELETE FROM items"),
    ]
    assert recorder.events.count(("end", "ok")) == 2


def test_a_failing_statement_ends_with_its_error_and_the_caller_gets_it(engine: Engine) -> None:
    recorder = Recorder()
    observe_statements(engine, recorder)
    with pytest.raises(exc.OperationalError), engine.connect() as connection:
        connection.execute(text("SELECT * FROM missing"))
    assert recorder.events == [("start", "SELECT * FROM missing"), ("end", "OperationalError")]


def test_every_hook_sees_every_statement_and_a_hook_may_skip_its_end(engine: Engine) -> None:
    first, second = Recorder(), Recorder()
    skipped: list[str] = []

    def not_interested(statement: str) -> None:
        skipped.append(statement)

    observe_statements(engine, first)
    observe_statements(engine, not_interested)
    observe_statements(engine, second)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    assert first.events == second.events == [("start", "SELECT 1"), ("end", "ok")]
    assert skipped == ["SELECT 1"]


def test_hooks_listen_to_dialect_events_only_never_to_connection_events(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    listened: list[tuple[object, str, Callable[..., Any]]] = []
    listen = event.listen

    def recording_listen(target: Any, identifier: str, fn: Callable[..., Any], **kw: Any) -> None:
        listened.append((target, identifier, fn))
        listen(target, identifier, fn, **kw)

    monkeypatch.setattr(event, "listen", recording_listen)
    observe_statements(engine, Recorder())
    observe_statements(engine, Recorder())  # a second hook adds no listener

    connection_events = {name for name in vars(ConnectionEvents) if not name.startswith("_")}
    dialect_events = {name for name in vars(DialectEvents) if not name.startswith("_")}
    identifiers = sorted(identifier for _, identifier, _ in listened)
    assert identifiers == ["do_execute", "do_execute_no_params", "do_executemany"]
    assert set(identifiers) <= dialect_events
    assert not set(identifiers) & connection_events
    assert all(event.contains(target, name, fn) for target, name, fn in listened)
