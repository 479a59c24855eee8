"""Parsed and validated documents, cached: a repeated query skips parsing and validation.

The cache key is the query text. What is cached does not depend on variables: the document,
its validation errors, the limits' shape of each operation and each operation's type.
Per request only the variable-dependent complexity is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import LRUCache
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    specified_rules,
    validate,
)
from graphql.validation import NoSchemaIntrospectionCustomRule

from pcf_api.graphql.limits import DocumentShape, QueryLimits, analyze_document, parse_query

INTROSPECTION_FIELDS = frozenset({"__typename", "__schema", "__type"})
DATABASE_FREE_FIELDS = INTROSPECTION_FIELDS | {"health"}


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    document: DocumentNode | None
    errors: Sequence[GraphQLError]
    shape: DocumentShape | None
    operation_types: dict[str | None, OperationType]
    root_fields: dict[str | None, tuple[str, ...]]
    """Top-level field names per operation, through fragments, once per selection (aliases of
    one field count separately)."""

    def operation_type(self, operation_name: str | None) -> OperationType | None:
        """The type of the operation a request selects; None when it selects none."""
        if operation_name is None and len(self.operation_types) == 1:
            return next(iter(self.operation_types.values()))
        return self.operation_types.get(operation_name)

    def operation_name(self, requested: str | None) -> str | None:
        """The name of the operation a request selects: the requested one, or the name of the
        document's only operation (None when it is anonymous)."""
        if requested is None and len(self.operation_types) == 1:
            return next(iter(self.operation_types))
        return requested

    def fields(self, operation_name: str | None) -> tuple[str, ...]:
        """The top-level fields of the operation a request selects (none when it selects none)."""
        if operation_name is None and len(self.root_fields) == 1:
            return next(iter(self.root_fields.values()))
        return self.root_fields.get(operation_name, ())

    def needs_database(self, operation_name: str | None) -> bool:
        """Whether the operation reads or writes notes (anything but health and introspection)."""
        return not set(self.fields(operation_name)) <= DATABASE_FREE_FIELDS

    def is_introspection(self, operation_name: str | None) -> bool:
        """Whether the operation asks only about the schema (no resolver of ours runs)."""
        fields = self.fields(operation_name)
        return bool(fields) and set(fields) <= INTROSPECTION_FIELDS


class DocumentCache:
    def __init__(
        self,
        schema: GraphQLSchema,
        limits: QueryLimits,
        *,
        introspection: bool,
        size: int,
    ) -> None:
        self.schema = schema
        self.limits = limits
        rules: list[type[ASTValidationRule]] = list(specified_rules)
        if not introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = tuple(rules)
        self._cache: LRUCache[str, PreparedDocument] = LRUCache(maxsize=max(size, 1))
        self._enabled = size > 0

    def cached(self, query: str) -> PreparedDocument | None:
        """The prepared document when ``query`` was prepared before and is still cached."""
        return self._cache.get(query) if self._enabled else None

    def prepare(self, query: str) -> PreparedDocument:
        """Parse, analyse and validate ``query``; raises AppError when it is too large.

        Documents over the limits are not cached, so they cannot push useful entries out."""
        if self._enabled:
            cached = self._cache.get(query)
            if cached is not None:
                return cached
        prepared = self._prepare(query)
        if self._enabled:
            self._cache[query] = prepared
        return prepared

    def _prepare(self, query: str) -> PreparedDocument:
        try:
            document = parse_query(query, self.limits)
        except GraphQLError as error:
            return PreparedDocument(None, [error], None, {}, {})
        operations = [
            definition
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        fragments = fragments_of(document)
        operation_types = {_name(operation): operation.operation for operation in operations}
        root_fields = {
            _name(operation): root_field_names(operation, fragments) for operation in operations
        }
        shape = analyze_document(document)
        errors = validate(self.schema, document, self.rules)
        return PreparedDocument(document, errors, shape, operation_types, root_fields)


def _name(operation: OperationDefinitionNode) -> str | None:
    return operation.name.value if operation.name else None


def root_field_names(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """The operation's top-level field names, through fragments, once per selection."""
    return tuple(_field_names(operation.selection_set, fragments, frozenset()))


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }


def _field_names(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str],
) -> list[str]:
    """The field names of a selection set, through inline fragments and fragment spreads (a
    spread already being followed is skipped, so a fragment cycle ends here too)."""
    names: list[str] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            names.append(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            names.extend(_field_names(selection.selection_set, fragments, seen))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                names.extend(_field_names(fragment.selection_set, fragments, seen | {name}))
    return names
