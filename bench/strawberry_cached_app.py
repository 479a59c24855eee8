"""A peer for bench/graphql.py: the tutorial app (bench/baseline_app.py) with the caches
Strawberry documents for speed, ``ParserCache`` and ``ValidationCache``.

Same resolvers, SQL and server as the baseline; only the schema's extensions differ, so the
difference between the two is what those caches buy. Run it like the baseline:

    BENCH_DATABASE_URL=sqlite+aiosqlite:////abs/path.db \
        .venv/bin/uvicorn bench.strawberry_cached_app:app --port 8001
"""

from __future__ import annotations

import strawberry
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from bench.baseline_app import Query, lifespan

CACHED_DOCUMENTS = 100  # the size Strawberry's documentation shows; the benchmark sends two

schema = strawberry.Schema(
    query=Query,
    extensions=[ParserCache(maxsize=CACHED_DOCUMENTS), ValidationCache(maxsize=CACHED_DOCUMENTS)],
)
graphql_app: GraphQL[None, None] = GraphQL(schema)

app = Starlette(
    routes=[Route("/graphql", graphql_app), WebSocketRoute("/graphql", graphql_app)],
    lifespan=lifespan,
)
