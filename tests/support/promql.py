"""The vector selectors of a PromQL expression: which metrics it reads, with which matchers.

A small lexer, enough for the expressions of our dashboard and rules (and most others): it
skips strings that are function arguments, ranges/durations in brackets, numbers, keywords and
the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``, and
reads every ``metric{label op "value", …}`` or bare ``metric``. Prometheus itself checks the
syntax; this only says what each expression points at, so a test can check that the service
exports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9][0-9a-zA-Z._]*)")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*(,|\})')

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = re.fullmatch(self.value, value) is not None
        return found if self.op == "=~" else not found

    @property
    def accepts_absence(self) -> bool:
        """A series without the label matches (Prometheus treats a missing label as "")."""
        return self.matches("")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]

    def __str__(self) -> str:
        inner = ", ".join(f"{m.label}{m.op}{json.dumps(m.value)}" for m in self.matchers)
        return f"{self.metric}{{{inner}}}" if inner else self.metric


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in ``expr``, in order (duplicates kept)."""
    found: list[Selector] = []
    position = 0
    while position < len(expr):
        char = expr[position]
        if char.isspace():
            position += 1
        elif char == "#":
            end = expr.find("\n", position)
            position = len(expr) if end < 0 else end
        elif char in "\"'`":
            position = _skip_string(expr, position)
        elif char == "[":
            position = _skip_to(expr, position, "]")
        elif char == "{":
            matchers, position = _matchers(expr, position)
            names = [m.value for m in matchers if m.label == "__name__" and m.op == "="]
            rest = tuple(m for m in matchers if m.label != "__name__")
            found.append(Selector(names[0] if names else "", rest))
        elif (number := _NUMBER.match(expr, position)) is not None:
            position = number.end()
        elif (identifier := _IDENTIFIER.match(expr, position)) is not None:
            position = _after_identifier(expr, identifier.group(), identifier.end(), found)
        else:
            position += 1  # operators, parentheses, commas
    return found


def _after_identifier(expr: str, name: str, position: int, found: list[Selector]) -> int:
    """Reads what follows the identifier ``name``: a label list to skip, the arguments of a
    function, or a selector (appended to ``found``). Returns where to go on."""
    following = _skip_space(expr, position)
    next_char = expr[following] if following < len(expr) else ""
    if name in _LABEL_LISTS:
        return _skip_to(expr, following, ")") if next_char == "(" else position
    if name.lower() in _KEYWORDS or name in AGGREGATIONS or next_char == "(":
        return position  # an operator, a function or an aggregation: its arguments follow
    if next_char == "{":
        matchers, position = _matchers(expr, following)
        found.append(Selector(name, matchers))
        return position
    found.append(Selector(name, ()))
    return position


def metric_names(expr: str) -> set[str]:
    return {selector.metric for selector in selectors(expr)}


def _skip_space(expr: str, position: int) -> int:
    while position < len(expr) and expr[position].isspace():
        position += 1
    return position


def _skip_to(expr: str, position: int, closing: str) -> int:
    end = expr.find(closing, position)
    if end < 0:
        raise ValueError(f"unclosed {expr[position]!r} at {position} in {expr!r}")
    return end + 1


def _skip_string(expr: str, position: int) -> int:
    quote = expr[position]
    position += 1
    while position < len(expr):
        if expr[position] == "\\" and quote != "`":
            position += 2
        elif expr[position] == quote:
            return position + 1
        else:
            position += 1
    raise ValueError(f"unclosed string in {expr!r}")


def _matchers(expr: str, position: int) -> tuple[tuple[Matcher, ...], int]:
    """The matchers of the ``{…}`` starting at ``position``, and the position after it."""
    position += 1
    if expr[_skip_space(expr, position)] == "}":
        return (), _skip_space(expr, position) + 1
    matchers = []
    while True:
        found = _MATCHER.match(expr, position)
        if found is None:
            raise ValueError(f"cannot read the label matchers at {position} in {expr!r}")
        label, op, quoted, end = found.groups()
        matchers.append(Matcher(label, op, json.loads(quoted)))
        position = found.end()
        if end == ",":  # a trailing comma is allowed: `{a="b",}`
            following = _skip_space(expr, position)
            if following < len(expr) and expr[following] == "}":
                end, position = "}", following + 1
        if end == "}":
            return tuple(matchers), position
