"""Hooks around every SQL statement an engine sends: what metrics and tracing listen to.

Why not SQLAlchemy's ``before_cursor_execute`` / ``after_cursor_execute``: once an engine has
any connection-level listener, every ``Connection`` dispatches through a joined dispatcher that
builds a new listener collection for each event it checks — seven per statement, a measurable
share of a read (docs/benchmarks.md, change 8). The dialect's ``do_execute`` events are
checked on the dialect alone, and a listener that runs the statement itself (returning True, as
the event's documentation describes) sees it start and end, with its error.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

StatementEnd = Callable[[BaseException | None], None]
StatementHook = Callable[[str], StatementEnd | None]
"""Told of each statement as it is sent (its text, with placeholders; never the values). What
it returns, if anything, is called when the driver is done: with the error if it failed."""


class _Hooks:
    """The hooks of one engine's dialect, and the three listeners that run them."""

    def __init__(self, engine: Engine) -> None:
        self.hooks: list[StatementHook] = []
        dialect = engine.dialect
        event.listen(engine, "do_execute", self._execute, retval=True)
        event.listen(engine, "do_executemany", self._executemany, retval=True)
        event.listen(engine, "do_execute_no_params", self._execute_no_params, retval=True)
        self._do_execute = dialect.do_execute
        self._do_executemany = dialect.do_executemany
        self._do_execute_no_params = dialect.do_execute_no_params

    def _execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        self._run(statement, self._do_execute, cursor, statement, parameters, context)
        return True

    def _executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        self._run(statement, self._do_executemany, cursor, statement, parameters, context)
        return True

    def _execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        self._run(statement, self._do_execute_no_params, cursor, statement, context)
        return True

    def _run(self, statement: str, send: Callable[..., Any], *arguments: Any) -> None:
        ends = [end for hook in self.hooks if (end := hook(statement)) is not None]
        try:
            send(*arguments)
        except BaseException as error:
            for end in ends:
                end(error)
            raise
        for end in ends:
            end(None)


_ENGINES: weakref.WeakKeyDictionary[Engine, _Hooks] = weakref.WeakKeyDictionary()


def observe_statements(engine: Engine, hook: StatementHook) -> None:
    """Call ``hook`` around every statement ``engine`` sends, from now on."""
    hooks = _ENGINES.get(engine)
    if hooks is None:
        hooks = _ENGINES[engine] = _Hooks(engine)
    hooks.hooks.append(hook)
