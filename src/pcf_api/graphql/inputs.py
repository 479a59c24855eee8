"""Argument values refused before anything runs: text the database cannot store, anywhere in a
request, and integer arguments outside their range.

Admission runs these checks before the complexity is computed, so a page size out of range is
INVALID_INPUT naming the argument and its range (never QUERY_TOO_COMPLEX, nor a number too big
to encode), and a NUL never reaches a query. Integers are read as Int coercion reads them: an
integral float counts as its integer; null, and anything coercion itself rejects (a string, a
fraction), is left to coercion. What does not depend on the variables (literals, which variable
feeds which argument) is found once per operation and cached with the document.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    value_from_ast_untyped,
)

from pcf_api.errors import AppError
from pcf_api.graphql import validation
from pcf_api.text import Unstorable, unstorable

_INT_LITERAL_MAX = 20  # characters: 32-bit integers have at most 11
_PAGED = ("limit", "offset", "first", "last")
# The list fields and their integer arguments (ranges: ``validation.RANGES``).
_BOUNDED: Mapping[str, tuple[str, ...]] = {
    "notes": _PAGED,
    "notesByAuthor": _PAGED,
    "searchNotes": ("limit",),
}


@dataclass(frozen=True, slots=True)
class Arguments:
    """What the checks need from one operation."""

    unstorable_literal: tuple[str, Unstorable] | None
    """The first string literal that cannot be stored: the field it is given to, and why."""
    bounded: tuple[tuple[str, int | str], ...]
    """Each integer argument given: its name, and its literal or the variable that supplies it."""
    fed: Mapping[str, str]
    """Each variable's first use: the argument or input field it is given to."""
    defaults: Mapping[str, Any]
    """The variables' declared defaults."""

    def check(self, variables: Mapping[str, Any]) -> None:
        """Raise INVALID_INPUT for the first value refused."""
        if self.unstorable_literal is not None:
            raise _refusal(*self.unstorable_literal)
        for argument, source in self.bounded:
            number = _integer(source if isinstance(source, int) else self._value(variables, source))
            if number is not None:
                validation.in_range(number, argument)
        for name, value in variables.items():
            self._check_text(name, value)
        for name, value in self.defaults.items():
            if name not in variables:
                self._check_text(name, value)

    def _value(self, variables: Mapping[str, Any], name: str) -> Any:
        return variables[name] if name in variables else self.defaults.get(name)

    def _check_text(self, variable: str, value: Any) -> None:
        found = _unstorable_in(value, self.fed.get(variable, variable))
        if found is not None:
            raise _refusal(*found)


def analyze(
    operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> Arguments:
    """The arguments of every field the operation selects, through its fragments."""
    literal: tuple[str, Unstorable] | None = None
    bounded: list[tuple[str, int | str]] = []
    fed: dict[str, str] = {}
    for node in _fields(operation.selection_set, fragments):
        sized = _BOUNDED.get(node.name.value, ())
        for argument in node.arguments or ():
            name = argument.name.value
            value = argument.value
            if name in sized and isinstance(value, VariableNode):
                bounded.append((name, value.name.value))
            elif name in sized and (number := literal_int(value)) is not None:
                bounded.append((name, number))
            for field, leaf in _leaves(argument.value, name):
                if isinstance(leaf, VariableNode):
                    fed.setdefault(leaf.name.value, field)
                elif isinstance(leaf, StringValueNode) and literal is None:
                    reason = unstorable(leaf.value)
                    literal = None if reason is None else (field, reason)
    defaults = {
        definition.variable.name.value: value_from_ast_untyped(definition.default_value)
        for definition in operation.variable_definitions or ()
        if definition.default_value is not None
    }
    return Arguments(literal, tuple(bounded), fed, defaults)


def literal_int(value: ValueNode) -> int | None:
    """An Int literal's value; None for another literal, or one so long it is far outside 32
    bits (validation refuses it; ``int()`` would refuse one of over 4300 digits)."""
    if not isinstance(value, IntValueNode) or len(value.value) > _INT_LITERAL_MAX:
        return None
    return int(value.value)


def _refusal(field: str, reason: Unstorable) -> AppError:
    return validation.invalid(field, reason.constraint, reason.message(field))


def _integer(value: Any) -> int | None:
    """The integer Int coercion would read from ``value``; None when coercion decides."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _unstorable_in(value: Any, field: str) -> tuple[str, Unstorable] | None:
    """The first string in a variable's value that cannot be stored, named by the innermost
    input field holding it (``field`` outside any object)."""
    pending = [(value, field)]
    while pending:
        item, name = pending.pop()
        if isinstance(item, str):
            reason = unstorable(item)
            if reason is not None:
                return name, reason
        elif isinstance(item, dict):
            pending.extend((inner, str(key)) for key, inner in item.items())
        elif isinstance(item, list):
            pending.extend((inner, name) for inner in item)
    return None


def _fields(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[FieldNode]:
    """Every field beneath ``selection_set``, each fragment followed once."""
    pending = [selection_set]
    followed: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                yield selection
                if selection.selection_set is not None:
                    pending.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in followed:
                    followed.add(name)
                    pending.append(fragments[name].selection_set)


def _leaves(value: ValueNode, field: str) -> Iterator[tuple[str, ValueNode]]:
    """The scalar values and variables inside a literal, each with the field it is given to."""
    pending = [(value, field)]
    while pending:
        node, name = pending.pop()
        if isinstance(node, ObjectValueNode):
            pending.extend((inner.value, inner.name.value) for inner in node.fields)
        elif isinstance(node, ListValueNode):
            pending.extend((inner, name) for inner in node.values)
        else:
            yield name, node
