"""The authorization policy and the contract every backend fulfils.

A note's relationships say who may do what with it: its owner may read, update, delete and
share it; a writer may read and update it; a reader may read it. Anyone authenticated may create
a note (and so becomes its owner). The local backend evaluates this table in SQL and
``deploy/spicedb/schema.zed`` states the same policy for SpiceDB, so both answer alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

NOTE = "note"


class Action(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    SHARE = "share"


class Relation(StrEnum):
    OWNER = "owner"
    WRITER = "writer"
    READER = "reader"


class Role(StrEnum):
    """What an owner can grant with ``shareNote``: the GraphQL enum's values."""

    READER = "READER"
    WRITER = "WRITER"

    @property
    def relation(self) -> Relation:
        return Relation.READER if self is Role.READER else Relation.WRITER


GRANTS: Mapping[Relation, frozenset[Action]] = {
    Relation.OWNER: frozenset({Action.READ, Action.UPDATE, Action.DELETE, Action.SHARE}),
    Relation.WRITER: frozenset({Action.READ, Action.UPDATE}),
    Relation.READER: frozenset({Action.READ}),
}


def relations_granting(action: Action) -> tuple[Relation, ...]:
    """The relations that allow ``action`` on an existing note (none allow ``create``)."""
    return tuple(relation for relation, actions in GRANTS.items() if action in actions)


@dataclass(frozen=True, slots=True)
class Resource:
    """``note:<id>`` for one note; ``note`` (no id) for the collection, the target of create."""

    type: str
    id: str | None = None

    @classmethod
    def note(cls, note_id: str) -> Resource:
        return cls(NOTE, note_id)

    @classmethod
    def parse(cls, text: str) -> Resource:
        """``note:<id>`` or ``note``; the id may itself contain colons."""
        kind, sep, ident = text.partition(":")
        if kind != NOTE or (sep and not ident):
            raise ValueError(f"unknown resource {text!r}")
        return cls(kind, ident if sep else None)

    def __str__(self) -> str:
        return self.type if self.id is None else f"{self.type}:{self.id}"


class BackendUnavailable(Exception):
    """The backend could not be asked (down, timing out, refusing our credentials, breaker open).

    Only this error lets the authorizer fall back to cached decisions; any other is a bug.
    """


class AuthorizationBackend(Protocol):
    """Where relationships live and decisions are computed. Every method may raise
    BackendUnavailable; writes are idempotent so a caller may retry them."""

    name: str

    async def check(self, subject: str, resource: Resource, action: Action) -> bool:
        """Whether ``subject`` may do ``action`` on one note."""
        ...

    async def filter(
        self, subject: str, action: Action, resources: Sequence[Resource]
    ) -> set[Resource]:
        """The subset of ``resources`` on which ``subject`` may do ``action`` (one round-trip
        where the backend allows)."""
        ...

    async def audience(
        self, resource: Resource, action: Action, subjects: Sequence[str]
    ) -> set[str]:
        """The subset of ``subjects`` who may do ``action`` on one note (one round-trip where
        the backend allows): who among a note's subscribers may receive a change to it."""
        ...

    async def create(self, note_id: str, owner: str) -> None:
        """Make ``owner`` the owner of a new note."""
        ...

    async def share(self, note_id: str, subject: str, role: Role) -> None:
        """Give ``subject`` exactly ``role`` on the note; an owner stays owner."""
        ...

    async def unshare(self, note_id: str, subject: str) -> None:
        """Take back what was shared with ``subject``; never removes the owner."""
        ...

    async def delete(self, note_id: str) -> None:
        """Drop every relationship of a deleted note."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise BackendUnavailable otherwise."""
        ...

    async def aclose(self) -> None: ...
