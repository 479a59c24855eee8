"""compat.strawberry: the unpublished parts of Strawberry pcf-api relies on, checked at start-up."""

from __future__ import annotations

import pytest
import strawberry
from graphql import GraphQLObjectType, GraphQLSchema

from pcf_api.compat import CompatibilityError
from pcf_api.compat import strawberry as compat


@strawberry.type
class Book:
    title: str

    @strawberry.field
    def shout(self) -> str:
        return self.title.upper()


@strawberry.type
class Query:
    book: Book


def fields() -> dict[str, object]:
    book = compat.graphql_core_schema(strawberry.Schema(query=Query)).type_map["Book"]
    assert isinstance(book, GraphQLObjectType)
    return dict(book.fields)


def test_the_self_check_passes_on_the_installed_version() -> None:
    compat.self_check()


def test_the_graphql_core_schema_is_the_one_strawberry_executes_on() -> None:
    schema = strawberry.Schema(query=Query)
    core = compat.graphql_core_schema(schema)
    assert isinstance(core, GraphQLSchema)
    assert core.query_type is not None
    assert core.query_type.name == "Query"


def test_only_plain_fields_are_reported_as_plain_attributes() -> None:
    book = fields()
    assert compat.plain_attribute(book["title"]) == "title"  # type: ignore[arg-type]
    assert compat.plain_attribute(book["shout"]) is None  # type: ignore[arg-type]


def test_a_version_outside_the_tested_range_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pcf_api.compat.version", lambda _: "0.100.0")
    with pytest.raises(CompatibilityError, match=r"strawberry-graphql 0\.100\.0"):
        compat.self_check()


def test_a_missing_schema_attribute_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    original = strawberry.Schema.__init__

    def without_core(self: strawberry.Schema, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        del self._schema

    monkeypatch.setattr(strawberry.Schema, "__init__", without_core)
    with pytest.raises(CompatibilityError, match="graphql-core schema"):
        compat.self_check()
