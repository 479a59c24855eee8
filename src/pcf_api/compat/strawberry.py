"""What pcf-api takes from Strawberry beyond its published API.

The HTTP path executes with graphql-core directly on Strawberry's schema (``graphql/http.py``
says why), which Strawberry keeps as ``Schema._schema``. Fields without a resolver of their own
are switched to a direct attribute read (``graphql/schema.py``), which needs to know which
fields Strawberry itself resolves by plain ``getattr``: the field's definition back-reference
and the ``_is_default`` mark on Strawberry's default resolver.
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLField, GraphQLObjectType, GraphQLSchema
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from pcf_api.compat import CompatibilityError, require_version

SUPPORTED = ">=0.318.1,<0.342"


def graphql_core_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built and executes on."""
    core: GraphQLSchema = schema._schema
    return core


def plain_attribute(field: GraphQLField) -> str | None:
    """The Python attribute ``field`` reads when Strawberry resolves it by plain ``getattr``
    (no resolver, permission classes, field extensions or exception handlers); else None."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if (
        isinstance(definition, StrawberryField)
        and getattr(field.resolve, "_is_default", False)
        and definition.default_resolver is getattr
    ):
        return definition.python_name
    return None


def self_check() -> None:
    """Fail loudly unless the installed Strawberry still has what this module uses."""
    require_version("strawberry-graphql", SUPPORTED)

    @strawberry.type
    class Probe:
        plain: str

    schema = strawberry.Schema(query=Probe)
    core = getattr(schema, "_schema", None)
    if not isinstance(core, GraphQLSchema):
        raise CompatibilityError("strawberry.Schema no longer keeps its graphql-core schema")
    probe = core.type_map.get("Probe")
    plain = probe.fields["plain"] if isinstance(probe, GraphQLObjectType) else None
    if plain is None or plain_attribute(plain) != "plain":
        raise CompatibilityError("Strawberry no longer marks its plain-attribute resolvers")
