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
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    specified_rules,
    validate,
)
from graphql.validation import NoSchemaIntrospectionCustomRule

from pcf_api.graphql.limits import DocumentShape, QueryLimits, analyze_document, parse_query

DATABASE_FREE_FIELDS = frozenset({"health", "__typename", "__schema", "__type"})


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    document: DocumentNode | None
    errors: Sequence[GraphQLError]
    shape: DocumentShape | None
    operation_types: dict[str | None, OperationType]
    root_fields: dict[str | None, frozenset[str] | None]
    """Top-level field names per operation; None when fragments make them indirect."""

    def operation_type(self, operation_name: str | None) -> OperationType | None:
        """The type of the operation a request selects; None when it selects none."""
        if operation_name is None and len(self.operation_types) == 1:
            return next(iter(self.operation_types.values()))
        return self.operation_types.get(operation_name)

    def needs_database(self, operation_name: str | None) -> bool:
        """Whether the operation reads or writes notes (anything but health and introspection)."""
        if operation_name is None and len(self.root_fields) == 1:
            fields = next(iter(self.root_fields.values()))
        else:
            fields = self.root_fields.get(operation_name)
        return fields is None or not fields <= DATABASE_FREE_FIELDS


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
        operation_types = {_name(operation): operation.operation for operation in operations}
        root_fields = {_name(operation): _root_fields(operation) for operation in operations}
        shape = analyze_document(document)
        errors = validate(self.schema, document, self.rules)
        return PreparedDocument(document, errors, shape, operation_types, root_fields)


def _name(operation: OperationDefinitionNode) -> str | None:
    return operation.name.value if operation.name else None


def _root_fields(operation: OperationDefinitionNode) -> frozenset[str] | None:
    names = []
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return None
        names.append(selection.name.value)
    return frozenset(names)
