"""Parsed and validated documents, cached: a repeated query skips parsing and validation.

The cache key is the query text. What is cached does not depend on variables: the document,
its validation errors, the limits' shape of each operation and each operation's type.
Per request only the variable-dependent complexity is computed. The cache is bounded in bytes
(query text and syntax tree, estimated per token) as well as in count: a client
chooses the text, and distinct large documents would otherwise fill memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from pcf_api.sizing import BytesCache, text_bytes

INTROSPECTION_FIELDS = frozenset({"__typename", "__schema", "__type"})
DATABASE_FREE_FIELDS = INTROSPECTION_FIELDS | {"health"}

TOKEN_BYTES = 640
"""A parsed document's memory per token beyond the token's text: the token object, its share of
the syntax nodes, locations and lists, and of the limits' shape (measured with tracemalloc over
documents of fields, arguments, variables, fragments and comments, rounded up)."""
ERROR_BYTES = 1536
"""A validation or syntax error's memory beyond its message: the error, its locations and
node list."""
DOCUMENT_BYTES = 16_384
"""A prepared document's fixed memory: the document node, its source, the operation maps."""


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
        max_bytes: int = 32 * 1_048_576,
    ) -> None:
        self.schema = schema
        self.limits = limits
        rules: list[type[ASTValidationRule]] = list(specified_rules)
        if not introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = tuple(rules)
        self._cache: BytesCache[str, PreparedDocument] = BytesCache(
            max_bytes=max_bytes, max_entries=size, size_of=document_bytes
        )
        self._enabled = self._cache.enabled

    @property
    def size_bytes(self) -> int:
        """The estimated memory of the cached documents."""
        return self._cache.size_bytes

    def __len__(self) -> int:
        return len(self._cache)

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
            self._cache.put(query, prepared)
        return prepared

    def _prepare(self, query: str) -> PreparedDocument:
        try:
            document = parse_query(query, self.limits)
        except GraphQLError as error:
            # Cached without its traceback, whose frames would keep the request alive with it.
            return PreparedDocument(None, [error.with_traceback(None)], None, {}, {})
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


def document_bytes(query: str, prepared: PreparedDocument) -> int:
    """A cached document's memory: its text, then per token (the parser keeps every token,
    comments included, linked from the tree's locations) its value and fixed share, and per
    error its message and fixed share. Names and string values are the tokens' own strings."""
    size = DOCUMENT_BYTES + text_bytes(query)
    document = prepared.document
    token = document.loc.start_token if document is not None and document.loc else None
    while token is not None:
        size += TOKEN_BYTES + (text_bytes(token.value) if token.value else 0)
        token = token.next
    return size + sum(ERROR_BYTES + text_bytes(error.message) for error in prepared.errors)


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
