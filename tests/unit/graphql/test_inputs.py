"""Argument values refused before anything runs (spec: graphql/inputs.py): text the database
cannot store anywhere in a request, and integer arguments out of range, read as Int coercion
reads them. Each refusal is INVALID_INPUT naming the field and the constraint."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse

from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.documents import fragments_of
from pcf_api.graphql.inputs import Arguments, analyze


def arguments(query: str) -> Arguments:
    document = parse(query)
    operation = next(
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )
    return analyze(operation, fragments_of(document))


def refused(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(AppError) as caught:
        arguments(query).check(variables or {})
    error = caught.value
    assert error.code is ErrorCode.INVALID_INPUT
    return {**error.extensions, "message": error.message}


CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"


@pytest.mark.parametrize(
    ("query", "variables", "field"),
    [
        (CREATE, {"i": {"title": "t", "content": "a\x00", "author": "alice"}}, "content"),
        ("query($q: String!) { searchNotes(query: $q) { id } }", {"q": "\x00"}, "query"),
        ('{ searchNotes(query: "a\\u0000") { id } }', None, "query"),
        ('mutation { createNote(input: {title: "\\u0000", content: "c", author: "a"}) { id } }',
         None, "title"),
        ('query($q: String = "\\u0000") { searchNotes(query: $q) { id } }', None, "query"),
        ("query($ids: [ID!]) { a: note(id: \"x\") { id } }", {"ids": ["ok", "\x00"]}, "ids"),
        # A variable the operation does not use is refused as well: no text may carry NUL.
        ("{ notes { totalCount } }", {"unused": "\x00"}, "unused"),
        # Through fragments, named and inline.
        ('query { ...F } fragment F on Query { ... on Query { searchNotes(query: "\\u0000")'
         " { id } } }", None, "query"),
    ],
)  # fmt: skip
def test_nul_is_refused_wherever_it_is_naming_the_field_it_is_given_to(
    query: str, variables: dict[str, Any] | None, field: str
) -> None:
    error = refused(query, variables)

    assert (error["field"], error["constraint"]) == (field, "no_nul")
    assert error["message"] == f"{field} must not contain the NUL character (U+0000)."


def test_a_lone_surrogate_is_refused_as_not_unicode() -> None:
    error = refused(CREATE, {"i": {"title": "t", "content": "a\udc00", "author": "alice"}})

    assert (error["field"], error["constraint"]) == ("content", "valid_unicode")


def test_a_declared_default_is_checked_only_when_the_variable_is_absent() -> None:
    query = 'query($q: String = "\\u0000") { searchNotes(query: $q) { id } }'

    arguments(query).check({"q": "milk"})
    assert refused(query)["field"] == "query"


@pytest.mark.parametrize(
    ("query", "variables", "field", "message"),
    [
        ("query($n: Int) { notes(limit: $n) { totalCount } }", {"n": 1e20}, "limit",
         "limit must be between 1 and 100, not 100000000000000000000."),
        ("query($n: Int) { notes(limit: $n) { totalCount } }", {"n": 2**63}, "limit",
         "limit must be between 1 and 100, not 9223372036854775808."),
        ("query($n: Int) { notes(limit: $n) { totalCount } }", {"n": 2**31 - 1}, "limit",
         "limit must be between 1 and 100, not 2147483647."),
        ("query($n: Int) { notes(limit: $n) { totalCount } }", {"n": 0.0}, "limit",
         "limit must be between 1 and 100, not 0."),
        ("query($n: Int = 101) { notes(limit: $n) { totalCount } }", None, "limit",
         "limit must be between 1 and 100, not 101."),
        ("{ notes(offset: 10001) { totalCount } }", None, "offset",
         "offset must be between 0 and 10000, not 10001."),
        ("query($n: Int) { notes(first: $n) { totalCount } }", {"n": -1}, "first",
         "first must be between 0 and 100, not -1."),
        ("query($n: Int) { notesByAuthor(author: \"a\", last: $n) { totalCount } }",
         {"n": 101}, "last", "last must be between 0 and 100, not 101."),
        ('{ searchNotes(query: "x", limit: 9223372036854775808) { id } }', None, "limit",
         "limit must be between 1 and 100, not 9223372036854775808."),
        ('query { ...F } fragment F on Query { a: notes(limit: 500) { totalCount } }', None,
         "limit", "limit must be between 1 and 100, not 500."),
    ],
)  # fmt: skip
def test_an_integer_argument_out_of_range_names_the_argument_and_its_range(
    query: str, variables: dict[str, Any] | None, field: str, message: str
) -> None:
    error = refused(query, variables)

    assert (error["field"], error["constraint"]) == (field, "range")
    assert error["message"] == message


@pytest.mark.parametrize(
    "variables",
    [
        {"n": 100},
        {"n": 1.0},  # coercion reads an integral float as its integer
        {"n": None},  # null: the argument default
        {},
        # What Int coercion itself rejects is left to it (its own INVALID_INPUT).
        {"n": 1.5},
        {"n": "5000"},
        {"n": True},
        {"n": float("inf")},
        {"n": [5000]},
    ],
)
def test_values_in_range_and_values_coercion_rejects_pass(variables: dict[str, Any]) -> None:
    arguments("query($n: Int) { notes(limit: $n) { totalCount } }").check(variables)


def test_arguments_of_other_fields_and_names_are_not_ranges() -> None:
    arguments('{ note(id: "notes:x") { id } health { status } }').check({"limit": 10**9})
    arguments("query($n: Int) { notes(limit: 5) { totalCount } }").check({"n": 10**9})
