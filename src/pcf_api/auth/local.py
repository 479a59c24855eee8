"""The embedded authorization backend: relationships in the application database.

One row per (note, subject) holds the subject's relation to the note (owner, writer or reader),
so a check is one indexed lookup and a list filter one SELECT. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pcf_api.auth.policy import (
    NOTE,
    Action,
    BackendUnavailable,
    Relation,
    Resource,
    Role,
    relations_granting,
)
from pcf_api.store.database import is_unavailable, pool_is_busy
from pcf_api.store.tables import note_relationships

T = TypeVar("T")
_rel = note_relationships.c


class LocalBackend:
    """Relationship rows on SQLAlchemy Core. Database outages surface as BackendUnavailable;
    any other database error propagates unchanged."""

    name = "local"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the local authorization backend does not support {dialect}")
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def check(self, subject: str, resource: Resource, action: Action) -> bool:
        note_id = _note_id(resource)
        relations = relations_granting(action)
        if not relations:
            return False
        query = (
            select(_rel.relation)
            .where(_rel.note_id == note_id, _rel.subject == subject)
            .where(_rel.relation.in_([relation.value for relation in relations]))
        )

        async def run(connection: AsyncConnection) -> bool:
            return (await connection.execute(query)).first() is not None

        return await self._read(run)

    async def filter(
        self, subject: str, action: Action, resources: Sequence[Resource]
    ) -> set[Resource]:
        by_id = {_note_id(resource): resource for resource in resources}
        relations = relations_granting(action)
        if not by_id or not relations:
            return set()
        query = select(_rel.note_id).where(
            _rel.subject == subject,
            _rel.note_id.in_(list(by_id)),
            _rel.relation.in_([relation.value for relation in relations]),
        )

        async def run(connection: AsyncConnection) -> set[Resource]:
            result = await connection.execute(query)
            return {by_id[row.note_id] for row in result}

        return await self._read(run)

    async def create(
        self, note_id: str, owner: str, *, connection: AsyncConnection | None = None
    ) -> None:
        """Make ``owner`` the owner. Pass ``connection`` to write in the caller's transaction
        (with the note itself); otherwise this commits on its own."""
        statement = self._insert(note_relationships).values(
            note_id=note_id, subject=owner, relation=Relation.OWNER.value
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_rel.note_id, _rel.subject],
            set_={"relation": Relation.OWNER.value},
        )
        await self._write(statement, connection)

    async def share(self, note_id: str, subject: str, role: Role) -> None:
        statement = self._insert(note_relationships).values(
            note_id=note_id, subject=subject, relation=role.relation.value
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_rel.note_id, _rel.subject],
            set_={"relation": role.relation.value},
            where=_rel.relation != Relation.OWNER.value,
        )
        await self._write(statement)

    async def unshare(self, note_id: str, subject: str) -> None:
        await self._write(
            delete(note_relationships).where(
                _rel.note_id == note_id,
                _rel.subject == subject,
                _rel.relation != Relation.OWNER.value,
            )
        )

    async def delete(self, note_id: str, *, connection: AsyncConnection | None = None) -> None:
        await self._write(delete(note_relationships).where(_rel.note_id == note_id), connection)

    async def relation_of(self, note_id: str, subject: str) -> Relation | None:
        """The subject's relation to the note, if any (for tests and diagnostics)."""
        query = select(_rel.relation).where(_rel.note_id == note_id, _rel.subject == subject)

        async def run(connection: AsyncConnection) -> Relation | None:
            value = (await connection.execute(query)).scalar()
            return None if value is None else Relation(value)

        return await self._read(run)

    async def ping(self) -> None:
        """One round trip; none while requests hold every pooled connection (they show the
        database answers, and a ping would only queue behind them)."""
        if pool_is_busy(self.engine):
            return
        await self._read(_select_one)

    async def aclose(self) -> None:
        """The engine belongs to the application; nothing to close here."""

    async def _read(self, run: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self.engine.connect() as connection:
                return await run(connection)
        except Exception as exc:
            if is_unavailable(exc):
                raise BackendUnavailable(type(exc).__name__) from exc
            raise

    async def _write(self, statement: Any, connection: AsyncConnection | None = None) -> None:
        if connection is not None:
            await connection.execute(statement)
            return
        try:
            async with self.engine.begin() as own:
                await own.execute(statement)
        except Exception as exc:
            if is_unavailable(exc):
                raise BackendUnavailable(type(exc).__name__) from exc
            raise


async def _select_one(connection: AsyncConnection) -> None:
    await connection.execute(select(1))


def _note_id(resource: Resource) -> str:
    if resource.type != NOTE or resource.id is None:
        raise ValueError(f"not a note: {resource}")
    return resource.id
