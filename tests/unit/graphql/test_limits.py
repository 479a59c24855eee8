"""Query limits (spec: graphql/limits.py): size, depth, aliases and complexity before execution.

Boundary queries are checked against the notes schema so the numbers describe real requests;
a few documents are deliberately invalid, because the analysis may run before validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest
from graphql import (
    GraphQLSyntaxError,
    NoFragmentCyclesRule,
    build_schema,
    get_introspection_query,
    parse,
    validate,
)
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.limits import (
    MAX_DEPTH_CAP,
    OperationShape,
    QueryLimits,
    analyze_document,
    check,
    parse_query,
)

SCHEMA = build_schema(
    """
    scalar DateTime
    type Note { id: ID!, title: String!, content: String!, author: String!,
                createdAt: DateTime!, updatedAt: DateTime! }
    type NoteEdge { node: Note!, cursor: String! }
    type PageInfo { hasNextPage: Boolean!, hasPreviousPage: Boolean!,
                    startCursor: String, endCursor: String }
    type NotesConnection { edges: [NoteEdge!]!, pageInfo: PageInfo!, totalCount: Int! }
    type HealthStatus { status: String! }
    input CreateNoteInput { title: String!, content: String! }
    input UpdateNoteInput { title: String, content: String }
    type Query {
      note(id: ID!): Note
      notes(limit: Int = 10, offset: Int = 0, first: Int, after: String, last: Int,
            before: String): NotesConnection!
      notesByAuthor(author: String!, limit: Int = 10, offset: Int = 0, first: Int,
                    after: String, last: Int, before: String): NotesConnection!
      searchNotes(query: String!, limit: Int = 10): [Note!]!
      health: HealthStatus!
    }
    type Mutation {
      createNote(input: CreateNoteInput!): Note!
      updateNote(id: ID!, input: UpdateNoteInput!): Note!
      deleteNote(id: ID!): Boolean!
    }
    type Subscription { noteCreated: Note!, noteUpdated(id: ID): Note!, noteDeleted: String! }
    """
)

DEFAULTS = QueryLimits()


def run(
    query: str,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
    limits: QueryLimits = DEFAULTS,
) -> int:
    return check(analyze_document(parse(query)), operation_name, variables, limits)


def valid(query: str) -> str:
    """The query, after asserting the notes schema accepts it."""
    assert validate(SCHEMA, parse(query)) == []
    return query


def only(query: str) -> OperationShape:
    """The shape of a document's only operation."""
    shape = analyze_document(parse(query)).only
    assert shape is not None
    return shape


def rejected(query: str, **kwargs: Any) -> AppError:
    with pytest.raises(AppError) as caught:
        run(query, **kwargs)
    return caught.value


def type_chain(depth: int) -> str:
    """An introspection query exactly ``depth`` fields deep: the way to nest deeply here."""
    of_types = depth - 5  # __schema, types, fields, type ... name
    return valid(
        "{ __schema { types { fields { type { "
        + "ofType { " * of_types
        + "name"
        + " }" * of_types
        + " } } } } }"
    )


def notes_page(alias: str, limit: int) -> str:
    return f"{alias}: notes(limit: {limit}) {{ edges {{ node {{ content }} }} }}"


# Limits


def test_defaults_are_those_of_the_issue() -> None:
    assert QueryLimits() == QueryLimits(
        max_depth=15, max_complexity=1000, max_aliases=10, max_tokens=2000, max_bytes=100_000
    )


def test_a_configured_depth_above_the_hard_cap_is_clamped() -> None:
    assert MAX_DEPTH_CAP == 50
    assert QueryLimits(max_depth=80).max_depth == 50
    assert QueryLimits(max_depth=50).max_depth == 50
    assert QueryLimits(max_depth=3).max_depth == 3


def test_the_hard_cap_holds_however_high_the_configured_depth() -> None:
    limits = QueryLimits(max_depth=1000)
    assert run(type_chain(50), limits=limits) == 0
    error = rejected(type_chain(51), limits=limits)
    assert error.code is ErrorCode.QUERY_TOO_DEEP
    assert error.extensions == {"maximum": 50, "actual": 51}


# Depth: fields along the deepest path; fragments add no level


@pytest.mark.parametrize(
    ("query", "depth"),
    [
        ("{ __typename }", 1),
        ('{ note(id: "notes:x") { id } }', 2),
        ("{ notes { edges { node { id } } pageInfo { hasNextPage } } }", 4),
        ('{ ... on Query { ... on Query { note(id: "notes:x") { id } } } }', 2),
        (
            '{ ...Q } fragment Q on Query { note(id: "notes:x") { ...N } } '
            "fragment N on Note { id }",
            2,
        ),
        ("{ health { status } __schema { queryType { fields { name } } } }", 4),
    ],
)
def test_depth_counts_fields_and_not_fragments(query: str, depth: int) -> None:
    assert only(valid(query)).depth == depth


def test_depth_15_passes_and_16_fails() -> None:
    assert run(type_chain(15)) == 0
    error = rejected(type_chain(16))
    assert error.code is ErrorCode.QUERY_TOO_DEEP
    assert error.code.http_status == 400
    assert error.extensions == {"maximum": 15, "actual": 16}


def test_depth_hidden_in_fragments_is_found() -> None:
    query = valid(
        "{ __schema { ...S } } "
        "fragment S on __Schema { types { fields { type { ...T } } } } "
        "fragment T on __Type { ofType { ... on __Type { ofType { "
        + "ofType { " * 9
        + "name"
        + " }" * 9
        + " } } } }"
    )
    assert rejected(query).extensions == {"maximum": 15, "actual": 16}


def test_the_standard_introspection_query_fits_the_defaults() -> None:
    shape = analyze_document(parse_query(get_introspection_query(), DEFAULTS))
    assert shape.only is not None
    assert shape.only.depth == 15
    assert check(shape, None, None, DEFAULTS) == 0


# Complexity


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ('{ note(id: "notes:x") { id title author } }', 1),
        ('{ note(id: "notes:x") { content } }', 2),
        ("{ notes(limit: 100) { edges { node { content } } } }", 200),
        ("{ notes(limit: 7) { edges { node { id } } totalCount } }", 7),
        ("{ notes { totalCount } }", 10),
        ("{ notes(limit: null) { edges { node { content } } } }", 20),
        ('{ notesByAuthor(author: "ada", limit: 5) { edges { node { id content } } } }', 10),
        ('{ searchNotes(query: "x") { content } }', 60),
        ('{ searchNotes(query: "x", limit: 3) { id content title } }', 53),
        ('{ searchNotes(query: "x", limit: 0) { content } }', 50),
        # Counted where they occur, even where execution merges them.
        ("{ notes(limit: 3) { totalCount } notes(limit: 3) { totalCount } }", 6),
        ("{ notes(limit: 0) { edges { node { content } } } }", 0),
        ("{ health { status } __typename }", 0),
        ('mutation { createNote(input: {title: "t", content: "c"}) { id content } }', 1),
        ("subscription { noteCreated { content } }", 1),
        (
            "{ a: notes(limit: 2) { ...E } b: notes(limit: 3) { ...E } } "
            "fragment E on NotesConnection { edges { node { content } } }",
            10,
        ),
    ],
)
def test_complexity_of_valid_queries(query: str, cost: int) -> None:
    assert run(valid(query)) == cost


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        # Multipliers multiply: 3 + 3 x (50 + 2 x 1).
        ('{ notes(limit: 3) { s: searchNotes(query: "x", limit: 2) { content } } }', 159),
        # A negative limit costs nothing rather than paying for other fields.
        ("{ notes(limit: -500) { totalCount } note { content } }", 2),
        # A limit validation rejects is charged the default.
        ('{ notes(limit: "100") { totalCount } }', 10),
        # The last of duplicated arguments wins, as in execution.
        ("{ notes(limit: 1, limit: 4) { totalCount } }", 4),
    ],
)
def test_complexity_of_documents_validation_rejects(query: str, cost: int) -> None:
    assert validate(SCHEMA, parse(query)) != []
    assert run(query) == cost


def test_complexity_1000_passes_and_1001_fails() -> None:
    pages = " ".join(notes_page(f"p{i}", 100) for i in range(5))
    assert run(valid(f"{{ {pages} }}")) == 1000
    error = rejected(valid(f'{{ {pages} note(id: "notes:x") {{ id }} }}'))
    assert error.code is ErrorCode.QUERY_TOO_COMPLEX
    assert error.extensions == {"maximum": 1000, "actual": 1001}


LIMIT_VARIABLE = valid("query Page($n: Int) { notes(limit: $n) { edges { node { content } } } }")


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ("{ notes(first: 30) { edges { node { content } } } }", 60),
        ('{ notes(last: 7, before: "x") { edges { node { content } } } }', 14),
        ('{ notesByAuthor(author: "a", first: 3) { totalCount } }', 3),
        ('{ notes(after: "x") { edges { node { content } } } }', 20),  # no size: 10
        ("{ notes(first: -4) { totalCount } }", 0),
        # Combinations the resolver refuses are charged every size given.
        ("{ notes(first: 30, last: 20) { edges { node { content } } } }", 100),
        ("{ notes(limit: 5, first: 30) { totalCount } }", 35),
        # searchNotes has no cursor arguments; only limit sizes it.
        ('{ searchNotes(query: "q", limit: 4) { content } }', 54),
    ],
)
def test_first_and_last_size_a_page_like_limit(query: str, cost: int) -> None:
    assert run(query) == cost


KEYSET_VARIABLES = valid(
    "query Page($f: Int, $l: Int = 3) {"
    " a: notes(first: $f) { edges { node { content } } }"
    " b: notes(last: $l) { totalCount } }"
)


@pytest.mark.parametrize(
    ("variables", "cost"),
    [
        ({"f": 100}, 203),
        ({"f": 2, "l": 40}, 44),
        ({}, 23),  # $f absent: 10; $l: its declared default
        ({"f": None, "l": None}, 30),
        # What Int coercion rejects is charged the default: the request will not execute, and
        # no size from the request can make the cost a huge number.
        ({"f": 1e20}, 23),
        ({"f": 2**63}, 23),
        ({"f": 2**31}, 23),
        ({"f": "5"}, 23),
    ],
)
def test_first_and_last_variables_are_read_as_coerced(variables: dict[str, Any], cost: int) -> None:
    assert run(KEYSET_VARIABLES, variables) == cost


def test_a_huge_first_is_too_complex_with_a_number_that_encodes() -> None:
    error = rejected(KEYSET_VARIABLES, variables={"f": 2**31 - 1})
    assert error.code is ErrorCode.QUERY_TOO_COMPLEX
    assert error.extensions == {"maximum": 1000, "actual": 2 * (2**31 - 1) + 3}


@pytest.mark.parametrize(
    ("variables", "cost"),
    [
        ({"n": 100}, 200),
        ({"n": 4.0}, 8),  # Int coercion accepts integral floats
        (None, 20),  # absent: the argument default, 10
        ({}, 20),
        ({"n": None}, 20),
        ({"n": -3}, 0),
        # Values Int coercion will reject are charged the default.
        ({"n": "100"}, 20),
        ({"n": True}, 20),
        ({"n": 2.5}, 20),
        ({"n": math.inf}, 20),
    ],
)
def test_a_limit_variable_is_read_from_the_request(
    variables: dict[str, Any] | None, cost: int
) -> None:
    assert run(LIMIT_VARIABLE, variables) == cost


@pytest.mark.parametrize(
    ("variables", "cost"),
    [({}, 100), ({"n": 3}, 6), ({"n": None}, 20)],  # explicit null overrides the default
)
def test_an_absent_variable_takes_its_declared_default(
    variables: dict[str, Any], cost: int
) -> None:
    query = valid("query Page($n: Int = 50) { notes(limit: $n) { edges { node { content } } } }")
    assert run(query, variables) == cost


def test_a_null_variable_default_means_the_argument_default() -> None:
    assert run(valid("query Page($n: Int = null) { notes(limit: $n) { totalCount } }")) == 10


def test_one_shape_serves_every_request_whatever_its_variables() -> None:
    shape = analyze_document(
        parse(
            valid(
                "query Search($n: Int, $m: Int = 2) { notes(limit: $n) { ...E } "
                '  searchNotes(query: "x", limit: $m) { content } } '
                "fragment E on NotesConnection { edges { node { content } } }"
            )
        )
    )
    assert check(shape, "Search", {"n": 1}, DEFAULTS) == 2 + 50 + 2
    assert check(shape, "Search", {"n": 10, "m": 30}, DEFAULTS) == 20 + 50 + 30
    with pytest.raises(AppError) as caught:
        check(shape, "Search", {"n": 500, "m": 1}, DEFAULTS)
    assert caught.value.extensions == {"maximum": 1000, "actual": 1051}


def test_variables_multiply_with_each_other_and_with_literals() -> None:
    query = '{ a: notes(limit: $n) { s: searchNotes(query: "x", limit: $n) { content } } }'
    assert run(query, {"n": 3}) == 3 + 3 * (50 + 3)
    query = (
        '{ a: notes(limit: $n) { s: searchNotes(query: "x", limit: 4) { '
        "c: notes(limit: $m) { totalCount } } } }"
    )
    assert run(query, {"n": 2, "m": 5}) == 2 + 2 * (50 + 4 * 5)


# Aliases


def test_10_aliases_pass_and_11_fail() -> None:
    ten = " ".join(f"a{i}: __typename" for i in range(10))
    assert run(valid(f"{{ {ten} }}")) == 0
    error = rejected(valid(f"{{ {ten} a10: __typename }}"))
    assert error.code is ErrorCode.TOO_MANY_ALIASES
    assert error.extensions == {"maximum": 10, "actual": 11}


def test_aliases_count_once_per_fragment_spread_and_at_any_depth() -> None:
    query = valid(
        '{ n: note(id: "notes:x") { ...A } m: note(id: "notes:y") { ...A } '
        'note(id: "notes:z") { ...A } } fragment A on Note { i: id t: title c: content }'
    )
    assert only(query).aliases == 11
    assert rejected(query).code is ErrorCode.TOO_MANY_ALIASES


def test_an_alias_equal_to_the_field_name_still_counts() -> None:
    assert only("{ id: id }").aliases == 1


def test_limits_are_checked_depth_then_aliases_then_complexity() -> None:
    aliased_pages = " ".join(notes_page(f"p{i}", 100) for i in range(11))
    assert rejected(f"{{ {aliased_pages} }}").code is ErrorCode.TOO_MANY_ALIASES
    deep = type_chain(16)[1:-1]
    assert rejected(f"{{ {aliased_pages} {deep} }}").code is ErrorCode.QUERY_TOO_DEEP


# Operations


MULTIPLE = valid(
    'query Cheap { note(id: "notes:x") { id } } '
    "query Pages { notes(limit: 100) { edges { node { content } } } } "
    f"query Deep {type_chain(16)}"
)


def test_the_named_operation_is_the_one_analyzed() -> None:
    assert run(MULTIPLE, operation_name="Cheap") == 1
    assert run(MULTIPLE, operation_name="Pages") == 200
    assert rejected(MULTIPLE, operation_name="Deep").code is ErrorCode.QUERY_TOO_DEEP


@pytest.mark.parametrize(
    ("query", "operation_name"),
    [
        (MULTIPLE, None),  # ambiguous
        (MULTIPLE, "Missing"),
        (f"{{ {notes_page('p', 9999)} }}", "Named"),  # the only operation is anonymous
        ("fragment F on Query { __typename }", None),  # no operation at all
    ],
)
def test_without_a_runnable_operation_the_check_passes_and_execution_reports_it(
    query: str, operation_name: str | None
) -> None:
    assert run(query, operation_name=operation_name) == 0


def test_the_only_operation_runs_without_a_name() -> None:
    assert run(valid("query Only { notes(limit: 3) { totalCount } }")) == 3


def test_a_duplicated_operation_name_means_the_last_as_in_execution() -> None:
    query = "query Q { note { id } } query Q { notes { totalCount } }"
    assert run(query, operation_name="Q") == 10


def test_type_system_definitions_are_ignored() -> None:
    assert run("type Extra { a: Int } { note { content } }") == 2


# Fragments: cycles, unknown names, fan-out


@pytest.mark.parametrize(
    "query",
    [
        "{ ...A } fragment A on Query { ...A }",
        '{ ...A } fragment A on Query { ...B } fragment B on Query { note(id: "x") { id } ...A }',
        '{ note(id: "x") { ...N } } fragment N on Note { id ... on Note { ...N } }',
        "{ ...A ...B } fragment A on Query { ...B } fragment B on Query { ...C } "
        "fragment C on Query { ...B ...A }",
    ],
)
def test_fragment_cycles_terminate_and_are_left_to_validation(query: str) -> None:
    assert run(query) >= 0
    assert validate(SCHEMA, parse(query), [NoFragmentCyclesRule])


def test_unknown_fragments_add_nothing() -> None:
    assert run('{ ...Missing note(id: "notes:x") { ...AlsoMissing content } }') == 2


def test_fragments_are_expanded_per_spread_without_expanding_the_document() -> None:
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(60))
    query = f"{{ ...F0 }} {fragments} fragment F60 on Query {{ a: __typename content }}"
    assert only(query).aliases == 2**60
    assert rejected(query).extensions == {"maximum": 10, "actual": 2**60}
    assert run(query, limits=QueryLimits(max_aliases=2**60, max_complexity=2**60)) == 2**60


def test_a_long_chain_of_fragments_does_not_exhaust_the_stack() -> None:
    chain = " ".join(f"fragment F{i} on Query {{ a {{ ...F{i + 1} }} }}" for i in range(2000))
    assert only(f"{{ ...F0 }} {chain} fragment F2000 on Query {{ b }}").depth == 2001


# Document size


def test_bytes_are_limited_before_parsing() -> None:
    limits = QueryLimits(max_bytes=20)
    assert parse_query('{ note(id: "éé") }', limits)  # 20 bytes, 18 characters
    with pytest.raises(AppError) as caught:
        parse_query('{ note(id: "ééé") }', limits)  # 22 bytes, even though not valid
    assert caught.value.code is ErrorCode.QUERY_TOO_LARGE
    assert caught.value.extensions == {"maximum": 20, "actual": 22}
    with pytest.raises(AppError):
        parse_query("{" * 21, limits)  # never lexed


def test_a_lone_surrogate_from_json_is_measured_rather_than_crashing() -> None:
    query = '{ note(id: "\ud800") }'  # 19 bytes when encoded as if valid
    with pytest.raises(AppError) as caught:
        parse_query(query, QueryLimits(max_bytes=18))
    assert caught.value.extensions == {"maximum": 18, "actual": 19}
    with pytest.raises(GraphQLSyntaxError):
        parse_query(query, QueryLimits(max_bytes=19))


def test_the_default_byte_limit_is_100_000() -> None:
    padding = "#" * (100_000 - len("{ a }\n"))
    with pytest.raises(AppError) as caught:
        parse_query(f"{padding}\n{{ a }}\n", QueryLimits(max_tokens=10**6))
    assert caught.value.extensions == {"maximum": 100_000, "actual": 100_001}


def test_a_document_of_exactly_max_tokens_parses() -> None:
    assert parse_query("{ a b c }", QueryLimits(max_tokens=5))


@pytest.mark.parametrize("query", ["{ a b c d }", "# a comment is a token too\n{ a b c }"])
def test_a_document_over_max_tokens_is_rejected_while_parsing(query: str) -> None:
    with pytest.raises(AppError) as caught:
        parse_query(query, QueryLimits(max_tokens=5))
    assert caught.value.code is ErrorCode.QUERY_TOO_LARGE
    assert caught.value.extensions == {"maximum": 5}  # parsing stops, so no total is known


def test_the_default_token_limit_is_2000() -> None:
    assert parse_query("{" + " a" * 1998 + " }", DEFAULTS)
    with pytest.raises(AppError):
        parse_query("{" + " a" * 1999 + " }", DEFAULTS)


def test_other_syntax_errors_are_left_to_graphql() -> None:
    with pytest.raises(GraphQLSyntaxError):
        parse_query("{ a", DEFAULTS)


# Properties over generated documents

FRAGMENTS = ("F0", "F1", "F2", "F3")  # F3 is never defined
ALIASES = st.sampled_from(["", "x: ", "y: "])
NAMES = st.sampled_from(
    ["note", "notes", "notesByAuthor", "searchNotes", "content", "id", "edges", "__typename"]
)
LIMITS = st.sampled_from(
    [
        *["", "(limit: 3)", "(limit: 0)", "(limit: -2)", "(limit: null)", '(limit: "x")'],
        *["(limit: $n)", "(limit: $m)", "(limit: $undeclared)"],
    ]
)


@cache
def selection_sets(depth: int, spreadable: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Selection sets nesting up to ``depth`` fields and spreading only ``spreadable``."""
    options = [st.builds("{}{}{}".format, ALIASES, NAMES, LIMITS)]
    if spreadable:
        options.append(st.sampled_from(spreadable).map("...{}".format))
    if depth:
        inner = selection_sets(depth - 1, spreadable)
        options.append(st.builds("{}{}{} {}".format, ALIASES, NAMES, LIMITS, inner))
        options.append(inner.map("... on Query {}".format))
    selections = st.lists(st.one_of(options), min_size=1, max_size=3)
    return selections.map(lambda items: "{ " + " ".join(items) + " }")


@st.composite
def documents(draw: st.DrawFn, acyclic: bool) -> str:
    fragments = [
        f"fragment F{i} on Query "
        + draw(selection_sets(3, FRAGMENTS[i + 1 : 3] if acyclic else FRAGMENTS))
        for i in range(3)
    ]
    operation = draw(selection_sets(4, FRAGMENTS[:3] if acyclic else FRAGMENTS))
    return f"query Q($n: Int = 5, $m: Int) {operation} " + " ".join(fragments)


VARIABLES = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(st.none(), st.integers(-5, 50), st.floats(), st.text(max_size=2))
        for name in ("n", "m", "undeclared")
    },
)


@settings(deadline=None, max_examples=300)
@given(document=documents(acyclic=False), variables=VARIABLES)
def test_analysis_of_any_document_terminates_and_only_raises_app_errors(
    document: str, variables: dict[str, Any]
) -> None:
    shape = analyze_document(parse_query(document, QueryLimits(max_tokens=10**6)))
    for operation_name in ("Q", None, "Other"):
        try:
            complexity = check(shape, operation_name, variables, DEFAULTS)
        except AppError as error:
            code = error.code
        else:
            assert 0 <= complexity <= DEFAULTS.max_complexity
            continue
        assert code in {
            ErrorCode.QUERY_TOO_DEEP,
            ErrorCode.TOO_MANY_ALIASES,
            ErrorCode.QUERY_TOO_COMPLEX,
        }


def expand(
    selection_set: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    limit_of: Mapping[str, int],
) -> tuple[int, int, int]:
    """Depth, aliases and cost read straight off the issue, expanding every spread in place."""
    depth = aliases = cost = 0
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            inner = expand(fragments[selection.name.value].selection_set, fragments, limit_of)
        elif isinstance(selection, FieldNode):
            below = (0, 0, 0)
            if selection.selection_set is not None:
                below = expand(selection.selection_set, fragments, limit_of)
            name = selection.name.value
            arguments = {
                argument.name.value: argument.value for argument in selection.arguments or ()
            }
            limit = arguments.get("limit")
            if isinstance(limit, VariableNode):
                items = limit_of[limit.name.value]
            else:
                literal = int(limit.value) if isinstance(limit, IntValueNode) else 10
                items = max(literal, 0) if -(2**31) <= literal < 2**31 else 10
            if name in {"notes", "notesByAuthor"}:
                own = items * (1 + below[2])
            elif name == "searchNotes":
                own = 50 + items * below[2]
            else:
                own = {"note": 1, "content": 1}.get(name, 0) + below[2]
            inner = (below[0] + 1, below[1] + (selection.alias is not None), own)
        else:
            assert isinstance(selection, InlineFragmentNode)
            inner = expand(selection.selection_set, fragments, limit_of)
        depth = max(depth, inner[0])
        aliases += inner[1]
        cost += inner[2]
    return depth, aliases, cost


def request_limit(variables: Mapping[str, Any], name: str, default: int) -> int:
    if name not in variables:
        return default
    value = variables[name]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and value == int(value) and -(2**31) <= value < 2**31:
        return max(int(value), 0)
    return 10  # what Int coercion rejects never runs: charged the default


@settings(deadline=None, max_examples=300)
@given(document=documents(acyclic=True), variables=VARIABLES)
def test_analysis_agrees_with_expanding_every_fragment(
    document: str, variables: dict[str, Any]
) -> None:
    ast: DocumentNode = parse(document)
    operation, *definitions = ast.definitions
    assert isinstance(operation, OperationDefinitionNode)
    fragments = {
        definition.name.value: definition
        for definition in definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    declared = {"n": 5, "m": 10, "undeclared": 10}  # $n = 5, $m without a default
    limit_of = {name: request_limit(variables, name, value) for name, value in declared.items()}
    depth, aliases, cost = expand(operation.selection_set, fragments, limit_of)
    shape = analyze_document(ast).only
    assert shape is not None
    assert (shape.depth, shape.aliases) == (depth, aliases)
    assert shape.complexity.evaluate(variables) == cost
