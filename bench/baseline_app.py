"""The baseline for bench/graphql.py: the notes schema as the libraries' tutorials write it.

Strawberry's ASGI app (``strawberry.asgi.GraphQL``) on Starlette, resolvers on SQLAlchemy 2
async (ORM, ``AsyncSession`` per resolver), a plain ``select`` with limit/offset and a separate
``select count(*)``, no caching of any kind (no parser or validation cache, no DataLoader).
Same types and fields as pcf-api for the benchmarked queries. Run it like any tutorial app:

    BENCH_DATABASE_URL=sqlite+aiosqlite:////abs/path.db \
        .venv/bin/uvicorn bench.baseline_app:app --port 8001

(from the repository root: ``--app-dir bench`` would not do, bench/graphql.py would shadow the
``graphql`` package).

The table must already exist (pcf-api's migration creates it).
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import datetime

import strawberry
from sqlalchemy import DateTime, String, Text, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

engine = create_async_engine(os.environ["BENCH_DATABASE_URL"])
Session = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class NoteRow(Base):
    __tablename__ = "notes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@strawberry.type
class Note:
    id: strawberry.ID
    title: str
    content: str
    author: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: NoteRow) -> Note:
        return cls(
            id=strawberry.ID(row.id),
            title=row.title,
            content=row.content,
            author=row.author,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class NoteEdge:
    node: Note
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


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{position}".encode()).decode()


@strawberry.type
class Query:
    @strawberry.field
    async def note(self, id: strawberry.ID) -> Note | None:
        async with Session() as session:
            row = await session.get(NoteRow, str(id))
        return Note.from_row(row) if row is not None else None

    @strawberry.field
    async def notes(self, limit: int = 10, offset: int = 0) -> NotesConnection:
        async with Session() as session:
            rows = (
                await session.scalars(
                    select(NoteRow)
                    .order_by(NoteRow.created_at.desc(), NoteRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = await session.scalar(select(func.count()).select_from(NoteRow)) or 0
        edges = [
            NoteEdge(node=Note.from_row(row), cursor=encode_cursor(offset + index))
            for index, row in enumerate(rows)
        ]
        return NotesConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=offset + len(rows) < total,
                has_previous_page=offset > 0,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            total_count=total,
        )


schema = strawberry.Schema(query=Query)
graphql_app: GraphQL[None, None] = GraphQL(schema)


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = Starlette(
    routes=[Route("/graphql", graphql_app), WebSocketRoute("/graphql", graphql_app)],
    lifespan=lifespan,
)
