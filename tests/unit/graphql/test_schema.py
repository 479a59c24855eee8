"""The notes schema's plain fields (spec: graphql/schema.py ``read_plain_fields_directly``): they
read their attribute in one call, under their Python names, and fields with resolvers of their
own keep them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from graphql import GraphQLObjectType, GraphQLSchema

from pcf_api.graphql.schema import build_schema
from pcf_api.store.models import Note


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def _object(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    graphql_type = schema.type_map[name]
    assert isinstance(graphql_type, GraphQLObjectType)
    return graphql_type


def test_plain_fields_read_the_attribute_named_in_python(schema: GraphQLSchema) -> None:
    created = datetime(2026, 1, 2, tzinfo=UTC)
    note = Note("notes:1", "Title", "Body", "ann", created, created)
    fields = _object(schema, "Note").fields
    read = {name: field.resolve(note, None) for name, field in fields.items() if field.resolve}

    assert read == {
        "id": "notes:1",
        "title": "Title",
        "content": "Body",
        "author": "ann",
        "createdAt": created,
        "updatedAt": created,
    }
    assert all(
        field.resolve is not None and field.resolve.__module__ == "pcf_api.graphql.schema"
        for field in fields.values()
    )


def test_fields_with_resolvers_of_their_own_keep_them(schema: GraphQLSchema) -> None:
    resolvers = _object(schema, "Query").fields
    assert all(
        field.resolve is not None and field.resolve.__module__ != "pcf_api.graphql.schema"
        for field in resolvers.values()
    )
