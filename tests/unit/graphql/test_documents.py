"""The document cache's estimate of a prepared document (spec: graphql/documents.py), and its
byte bound."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from graphql import GraphQLSchema

from pcf_api.compat.strawberry import graphql_core_schema
from pcf_api.graphql.documents import DocumentCache
from pcf_api.graphql.limits import QueryLimits
from pcf_api.graphql.schema import build_schema
from support.memory import retained_bytes


def _fields(i: int, n: int) -> str:
    fields = " ".join(f"a{j}: id" for j in range(n))
    return f"query Q{i} {{ notes {{ totalCount edges {{ node {{ {fields} }} }} }} }}"


def _unknown_fields(i: int, n: int) -> str:
    return f"query Q{i} {{ {' '.join(f'x{j}' for j in range(n))} }}"


def _arguments(i: int, n: int) -> str:
    notes = " ".join(f'n{j}: note(id: "notes:{j:026d}") {{ id }}' for j in range(n))
    return f"query Q{i} {{ {notes} }}"


def _variables(i: int, n: int) -> str:
    variables = ", ".join(f"$v{j}: Int = {j}" for j in range(n))
    return f"query Q{i}({variables}) {{ health {{ status }} }}"


def _fragments(i: int, n: int) -> str:
    chain = " ".join(
        f"fragment F{j} on Note {{ id {f'...F{j + 1}' if j + 1 < n else 'title'} }}"
        for j in range(n)
    )
    return f"query Q{i} {{ notes {{ edges {{ node {{ ...F0 }} }} }} }} {chain}"


def _comments(i: int, n: int) -> str:
    comments = "\n".join(f"# {j} {'x' * 80}" for j in range(n))
    return f"query Q{i} {{ health {{ status }} }}\n{comments}"


def _syntax_error(i: int, n: int) -> str:
    return f"query Q{i} {{ {' '.join(f'f{j}' for j in range(n))} ("


SHAPES: dict[str, Callable[[int, int], str]] = {
    "fields": _fields,
    "unknown fields": _unknown_fields,
    "arguments": _arguments,
    "variables": _variables,
    "fragments": _fragments,
    "comments": _comments,
    "syntax error": _syntax_error,
}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return graphql_core_schema(build_schema())


def documents(schema: GraphQLSchema, **bounds: int) -> DocumentCache:
    limits = QueryLimits(max_tokens=100_000, max_bytes=10_000_000, max_aliases=10_000)
    return DocumentCache(schema, limits, introspection=False, **bounds)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [3, 60])
def test_the_estimate_covers_what_a_prepared_document_keeps(
    schema: GraphQLSchema, shape: str, size: int
) -> None:
    queries = [SHAPES[shape](index, size) for index in range(10)]
    cache = documents(schema, size=1000, max_bytes=1 << 40)
    cache.prepare(SHAPES[shape](999, size))  # the first of a shape warms validation's own caches
    before = cache.size_bytes

    def fill() -> DocumentCache:
        for query in queries:
            cache.prepare(query)
        return cache

    assert retained_bytes(fill) <= cache.size_bytes - before


def test_distinct_large_documents_stay_within_the_bytes(schema: GraphQLSchema) -> None:
    cache = documents(schema, size=1000, max_bytes=2_000_000)
    for index in range(40):
        cache.prepare(SHAPES["unknown fields"](index, 300))
        assert cache.size_bytes <= 2_000_000
    assert 0 < len(cache) < 40
