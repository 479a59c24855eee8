"""The embedded authorization backend: relationships in the application database.

One row per (note, subject) holds the subject's relation to the note (owner, writer or reader),
so a check is one indexed lookup and a list filter one SELECT. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from pcf_api.auth.policy import (
    NOTE,
    Action,
    BackendUnavailable,
    Relation,
    Resource,
    Role,
    relations_granting,
)
from pcf_api.errors import reason_of
from pcf_api.store.database import Database, Work, is_unavailable, select_one
from pcf_api.store.tables import note_relationships

T = TypeVar("T")
_rel = note_relationships.c
AUDIENCE_CHUNK = 1000
"""Subjects per statement of ``audience``: far below SQLite's and asyncpg's parameter limits."""


class LocalBackend:
    """Relationship rows on SQLAlchemy Core. Database outages surface as BackendUnavailable;
    any other database error propagates unchanged."""

    name = "local"

    def __init__(self, database: Database) -> None:
        self.database = database
        dialect = database.dialect_name
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

        def run(connection: Connection) -> bool:
            return connection.execute(query).first() is not None

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

        def run(connection: Connection) -> set[Resource]:
            return {by_id[row.note_id] for row in connection.execute(query)}

        return await self._read(run)

    async def audience(
        self, resource: Resource, action: Action, subjects: Sequence[str]
    ) -> set[str]:
        note_id = _note_id(resource)
        relations = [relation.value for relation in relations_granting(action)]
        unique = list(dict.fromkeys(subjects))
        if not unique or not relations:
            return set()
        queries = [
            select(_rel.subject).where(
                _rel.note_id == note_id,
                _rel.subject.in_(unique[start : start + AUDIENCE_CHUNK]),
                _rel.relation.in_(relations),
            )
            for start in range(0, len(unique), AUDIENCE_CHUNK)
        ]

        def run(connection: Connection) -> set[str]:
            return {row.subject for query in queries for row in connection.execute(query)}

        return await self._read(run)

    async def create(self, note_id: str, owner: str) -> None:
        """Make ``owner`` the owner. (A note created through the store gets its owner row in
        the note's own transaction: ``NoteStore.create``.)"""
        statement = self._insert(note_relationships).values(
            note_id=note_id, subject=owner, relation=Relation.OWNER.value
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_rel.note_id, _rel.subject],
            set_={"relation": Relation.OWNER.value},
        )
        await self._write(statement)

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

    async def delete(self, note_id: str) -> None:
        await self._write(delete(note_relationships).where(_rel.note_id == note_id))

    async def relation_of(self, note_id: str, subject: str) -> Relation | None:
        """The subject's relation to the note, if any (for tests and diagnostics)."""
        query = select(_rel.relation).where(_rel.note_id == note_id, _rel.subject == subject)

        def run(connection: Connection) -> Relation | None:
            value = connection.execute(query).scalar()
            return None if value is None else Relation(value)

        return await self._read(run)

    async def ping(self) -> None:
        """One round trip; none while requests hold every pooled connection (they show the
        database answers, and a ping would only queue behind them)."""
        if self.database.pool_is_busy():
            return
        await self._read(select_one)

    async def aclose(self) -> None:
        """The database belongs to the application; nothing to close here."""

    async def _read(self, run: Work[T]) -> T:
        try:
            return await self.database.read(run)
        except Exception as exc:
            if is_unavailable(exc):
                raise BackendUnavailable(reason_of(exc)) from exc
            raise

    async def _write(self, statement: Any) -> None:
        def run(connection: Connection) -> None:
            connection.execute(statement)

        try:
            await self.database.write(run)
        except Exception as exc:
            if is_unavailable(exc):
                raise BackendUnavailable(reason_of(exc)) from exc
            raise


def _note_id(resource: Resource) -> str:
    if resource.type != NOTE or resource.id is None:
        raise ValueError(f"not a note: {resource}")
    return resource.id
