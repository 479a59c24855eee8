"""Query limits: size, depth, aliases and complexity, all decided before anything executes.

The variable-independent work happens once per document (``analyze_document``, cacheable with
the parsed document); each request then only compares a few integers and evaluates a small
polynomial in its ``limit`` variables (``check``). Everything works on the AST, without the
schema, so it may run before validation: unknown fragments add nothing, and a fragment cycle
stops the descent (validation rejects cycles on its own).

Definitions:

* Depth counts fields along the deepest path; fragments, spread or inline, add no level.
  ``{ note(id: "x") { id } }`` has depth 2. Introspection fields count like any other.
* Aliases counts aliased fields, a fragment's once per spread.
* Complexity sums over fields: ``notes`` and ``notesByAuthor`` cost ``size x (1 + beneath)``,
  ``searchNotes`` ``50 + size x beneath``, ``note`` and ``content`` ``1 + beneath``, any other
  field ``beneath`` (the cost of its own selections). A list's size is its ``limit``, ``first``
  or ``last`` (the sum of those given, which the resolver refuses to combine; 10 when none is);
  each is the literal, else the request's variable, else the variable's declared default, else
  10. A value is read as Int coercion will read it: null, and anything coercion rejects (not
  integral, outside 32 bits), means 10, and a negative size 0. Fields count where they occur,
  so duplicates that execution would merge, and fields under ``@skip``/``@include``, count in
  full: the estimate never undercounts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
)

from pcf_api.errors import AppError, ErrorCode, default_message
from pcf_api.graphql.inputs import Arguments, analyze, literal_int

MAX_DEPTH_CAP = 50
_DEFAULT_LIMIT = 10  # the schema default of every ``limit``, and the size without one
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # GraphQL's Int


@dataclass(frozen=True, slots=True)
class _ListField:
    fixed: int  # charged once
    per_item: int  # charged per item, like everything selected beneath the field
    sizes: tuple[str, ...] = ("limit",)  # the arguments that bound the number of items


_PAGED = ("limit", "first", "last")  # offset style, keyset forward, keyset backward

# Fields returning up to ``size`` items: cost = fixed + size x (per_item + cost beneath).
_LIST_FIELDS: Mapping[str, _ListField] = {
    "notes": _ListField(fixed=0, per_item=1, sizes=_PAGED),
    "notesByAuthor": _ListField(fixed=0, per_item=1, sizes=_PAGED),
    "searchNotes": _ListField(fixed=50, per_item=0),
}
# Any other field: its cost here (0 when absent) + the cost beneath it.
_FIELD_COSTS: Mapping[str, int] = {"note": 1, "content": 1}

# A cost polynomial: sorted names of ``limit`` variables (a monomial) -> coefficient.
_Polynomial = dict[tuple[str, ...], int]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The configured maxima; ``max_depth`` above ``MAX_DEPTH_CAP`` is clamped to it."""

    max_depth: int = 15
    max_complexity: int = 1000
    max_aliases: int = 10
    max_tokens: int = 2000
    max_bytes: int = 100_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_depth", min(self.max_depth, MAX_DEPTH_CAP))


@dataclass(frozen=True, slots=True)
class Complexity:
    """An operation's cost as a polynomial in its ``limit`` variables.

    Literal limits are already multiplied in, so a query without ``limit`` variables is a single
    constant term. ``fallbacks`` is each declared variable's value when a request omits it.
    """

    terms: tuple[tuple[tuple[str, ...], int], ...]
    fallbacks: Mapping[str, int]

    def evaluate(self, variables: Mapping[str, Any]) -> int:
        total = 0
        for monomial, coefficient in self.terms:
            product = coefficient
            for name in monomial:
                product *= self._limit(variables, name)
            total += product
        return total

    def _limit(self, variables: Mapping[str, Any], name: str) -> int:
        if name not in variables:
            return self.fallbacks.get(name, _DEFAULT_LIMIT)
        return _coerced_size(variables[name])


def _coerced_size(value: object) -> int:
    """A size variable as GraphQL's Int coercion reads it. Null means the argument default;
    a value coercion rejects (not an integer, an integral float aside, or outside 32 bits)
    never executes, so it is charged the default too, and stays a small number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _DEFAULT_LIMIT
    if isinstance(value, float) and not value.is_integer():
        return _DEFAULT_LIMIT
    number = int(value)
    if not _INT_MIN <= number <= _INT_MAX:
        return _DEFAULT_LIMIT
    return max(number, 0)


@dataclass(frozen=True, slots=True)
class OperationShape:
    depth: int
    aliases: int
    complexity: Complexity
    arguments: Arguments  # for the checks of argument values (``inputs``), before the limits


@dataclass(frozen=True, slots=True)
class DocumentShape:
    """What admission needs from one document, computed once and reusable for every request."""

    named: Mapping[str, OperationShape]
    only: OperationShape | None  # the operation run without a name: set iff there is just one

    def operation(self, name: str | None) -> OperationShape | None:
        """The operation execution would pick, or None when execution will report an error."""
        return self.only if name is None else self.named.get(name)


def parse_query(query: str, limits: QueryLimits) -> DocumentNode:
    """Parse within the byte and token limits; other syntax errors propagate unchanged.

    Bytes are checked first so an oversized body is never lexed. The token count includes
    comments, so padding a query with them does not evade the limit.
    """
    size = len(query.encode(errors="surrogatepass"))  # JSON may carry lone surrogates
    if size > limits.max_bytes:
        raise AppError(
            ErrorCode.QUERY_TOO_LARGE,
            f"The query document is too large ({size} bytes, maximum {limits.max_bytes}).",
            extensions={"maximum": limits.max_bytes, "actual": size},
        )
    try:
        return parse(query, max_tokens=limits.max_tokens)
    except GraphQLSyntaxError as error:
        if f"Document contains more than {limits.max_tokens} tokens." not in error.message:
            raise
        # Parsing stops at the first token over the limit, so the full count is unknown.
        raise AppError(
            ErrorCode.QUERY_TOO_LARGE,
            f"The query document is too large (more than {limits.max_tokens} tokens).",
            extensions={"maximum": limits.max_tokens},
        ) from None


def check(
    shape: DocumentShape,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> int:
    """Raise AppError for the first limit exceeded (depth, aliases, complexity); else the cost.

    An unknown or ambiguous operation costs 0: execution reports it.
    """
    operation = shape.operation(operation_name)
    if operation is None:
        return 0
    if operation.depth > limits.max_depth:
        raise _exceeded(ErrorCode.QUERY_TOO_DEEP, "depth", limits.max_depth, operation.depth)
    if operation.aliases > limits.max_aliases:
        raise _exceeded(
            ErrorCode.TOO_MANY_ALIASES, "aliases", limits.max_aliases, operation.aliases
        )
    complexity = operation.complexity.evaluate(variables or {})
    if complexity > limits.max_complexity:
        raise _exceeded(
            ErrorCode.QUERY_TOO_COMPLEX, "complexity", limits.max_complexity, complexity
        )
    return complexity


def _exceeded(code: ErrorCode, what: str, maximum: int, actual: int) -> AppError:
    return AppError(
        code,
        f"{default_message(code).removesuffix('.')} ({what} {actual}, maximum {maximum}).",
        extensions={"maximum": maximum, "actual": actual},
    )


@dataclass(slots=True)
class _Summary:
    depth: int = 0
    aliases: int = 0
    cost: _Polynomial = field(default_factory=dict)

    def include(self, other: _Summary) -> None:
        self.depth = max(self.depth, other.depth)
        self.aliases += other.aliases
        for monomial, coefficient in other.cost.items():
            self.cost[monomial] = self.cost.get(monomial, 0) + coefficient


def analyze_document(document: DocumentNode) -> DocumentShape:
    """Depth, aliases and complexity of every operation, fragments expanded."""
    fragments: dict[str, FragmentDefinitionNode] = {}
    operations: list[OperationDefinitionNode] = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = definition  # the last one wins, as in execution
        elif isinstance(definition, OperationDefinitionNode):
            operations.append(definition)

    # Each fragment is summarized once, after those it spreads, so a spread costs a lookup
    # however often it repeats and a chain of fragments never deepens the Python stack.
    summaries: dict[str, _Summary] = {}
    for name in _dependency_order(fragments):
        summaries[name] = _selection_set(fragments[name].selection_set, summaries)

    named: dict[str, OperationShape] = {}
    shapes = [_operation(operation, summaries, fragments) for operation in operations]
    for operation, shape in zip(operations, shapes, strict=True):
        if operation.name is not None:
            named[operation.name.value] = shape  # the last one wins, as in execution
    return DocumentShape(named=named, only=shapes[0] if len(shapes) == 1 else None)


def _operation(
    operation: OperationDefinitionNode,
    summaries: Mapping[str, _Summary],
    fragments: Mapping[str, FragmentDefinitionNode],
) -> OperationShape:
    summary = _selection_set(operation.selection_set, summaries)
    fallbacks = {
        definition.variable.name.value: _literal_limit(definition.default_value)
        for definition in operation.variable_definitions or ()
    }
    return OperationShape(
        depth=summary.depth,
        aliases=summary.aliases,
        complexity=Complexity(terms=tuple(summary.cost.items()), fallbacks=fallbacks),
        arguments=analyze(operation, fragments),
    )


def _dependency_order(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after the fragments it spreads (an iterative depth-first search).

    A spread of a fragment still on the search path closes a cycle and is not followed, so the
    fragment holding it is summarized as if that spread were absent.
    """
    order: list[str] = []
    seen: set[str] = set()
    for root in fragments:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, _spreads(fragments[root].selection_set))]
        while stack:
            name, pending = stack[-1]
            for spread in pending:
                if spread in fragments and spread not in seen:
                    seen.add(spread)
                    stack.append((spread, _spreads(fragments[spread].selection_set)))
                    break
            else:
                stack.pop()
                order.append(name)
    return order


def _spreads(selection_set: SelectionSetNode) -> Iterator[str]:
    """Names of the fragments spread anywhere in a selection set, not following spreads."""
    pending = [selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                pending.append(selection.selection_set)


def _selection_set(selection_set: SelectionSetNode, summaries: Mapping[str, _Summary]) -> _Summary:
    """Summarize selections; recursion follows AST nesting only, which the parser bounds."""
    summary = _Summary()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            summary.include(_field(selection, summaries))
        elif isinstance(selection, InlineFragmentNode):
            summary.include(_selection_set(selection.selection_set, summaries))
        elif isinstance(selection, FragmentSpreadNode):
            fragment = summaries.get(selection.name.value)
            if fragment is not None:  # unknown, or the edge closing a cycle
                summary.include(fragment)
    return summary


def _field(node: FieldNode, summaries: Mapping[str, _Summary]) -> _Summary:
    beneath = _selection_set(node.selection_set, summaries) if node.selection_set else _Summary()
    name = node.name.value
    cost = beneath.cost
    list_field = _LIST_FIELDS.get(name)
    if list_field is None:
        _add_constant(cost, _FIELD_COSTS.get(name, 0))
    else:
        _add_constant(cost, list_field.per_item)
        cost = _scale_by_sizes(cost, _size_arguments(node, list_field.sizes))
        _add_constant(cost, list_field.fixed)
    return _Summary(
        depth=beneath.depth + 1,
        aliases=beneath.aliases + int(node.alias is not None),
        cost=cost,
    )


def _add_constant(cost: _Polynomial, amount: int) -> None:
    if amount:
        cost[()] = cost.get((), 0) + amount


def _scale(cost: _Polynomial, limit: int | str) -> _Polynomial:
    """Multiply by a literal limit, or by the limit variable of that name."""
    if isinstance(limit, int):
        return {monomial: c * limit for monomial, c in cost.items()} if limit else {}
    scaled: _Polynomial = {}
    for monomial, coefficient in cost.items():
        key = tuple(sorted((*monomial, limit)))
        scaled[key] = scaled.get(key, 0) + coefficient
    return scaled


def _scale_by_sizes(cost: _Polynomial, sizes: list[int | str]) -> _Polynomial:
    """Multiply by the sum of the sizes given."""
    scaled: _Polynomial = {}
    for size in sizes:
        for monomial, coefficient in _scale(cost, size).items():
            scaled[monomial] = scaled.get(monomial, 0) + coefficient
    return scaled


def _size_arguments(node: FieldNode, names: tuple[str, ...]) -> list[int | str]:
    """The field's size arguments among ``names``: literals, or the names of the variables
    that supply them; the default size when none is given."""
    arguments = {argument.name.value: argument.value for argument in node.arguments or ()}
    sizes: list[int | str] = []
    for name in names:
        if name not in arguments:
            continue
        value = arguments[name]
        sizes.append(value.name.value if isinstance(value, VariableNode) else _literal_limit(value))
    return sizes or [_DEFAULT_LIMIT]


def _literal_limit(value: object) -> int:
    """An Int literal read as coercion reads it (see ``_coerced_size``); absent or null means
    the default (as does any other literal, which validation rejects)."""
    number = literal_int(value) if isinstance(value, IntValueNode) else None
    return _DEFAULT_LIMIT if number is None else _coerced_size(number)
