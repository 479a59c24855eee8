"""The GraphQL object and input types. Resolvers return the store's Note records as they are;
these classes only describe them to the schema (no per-note copying)."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.type(name="Note")
class NoteType:
    id: strawberry.ID
    title: str
    content: str
    author: str
    created_at: datetime
    updated_at: datetime


@strawberry.type
class NoteEdge:
    node: NoteType
    cursor: str


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class NotesConnection:
    edges: list[NoteEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class ServiceHealth:
    name: str
    status: str
    critical: bool


@strawberry.type
class HealthStatus:
    status: str
    version: str
    uptime_seconds: float
    services: list[ServiceHealth]


@strawberry.input
class CreateNoteInput:
    title: str
    content: str
    author: str


@strawberry.input
class UpdateNoteInput:
    title: str | None = None
    content: str | None = None
