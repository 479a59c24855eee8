"""Every message the API can return is written in one style.

The messages are collected from the source, not listed here: every call to something that makes
a client-facing error (``AppError``, its subclasses, and the functions annotated to return one)
is found by an AST walk over ``src/pcf_api``, and its message argument is read as a literal, an
f-string or a module constant. A new raise site is therefore checked without touching this file.

The style: a sentence that ends with a period and starts with a capital letter, or with a name
the client itself wrote (an argument or input field of the schema, a GraphQL-over-HTTP request
parameter, or a value filled in at run time such as the offending field's name), kept as written.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from graphql import GraphQLInputObjectType, GraphQLObjectType

import pcf_api
from pcf_api.errors import _DEFAULT_MESSAGE, AppError
from pcf_api.graphql.schema import build_schema

SOURCE = Path(pcf_api.__file__).parent
REQUEST_PARAMETERS = {"query", "variables", "extensions", "operationName", "documentId"}
# Fixed by a protocol the clients implement, not prose: Apollo's persisted-query links match
# these exact strings.
PROTOCOL_MESSAGES = {"PersistedQueryNotFound", "PersistedQueryNotSupported"}
MESSAGE_PARAMETERS = ("message", "description")
PLACEHOLDER = "{x}"  # an f-string's field


@dataclass(frozen=True)
class Message:
    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text!r}"


def modules() -> Iterator[ModuleType]:
    yield pcf_api
    for info in pkgutil.walk_packages(pcf_api.__path__, "pcf_api."):
        yield importlib.import_module(info.name)


def returns_app_error(function: Callable[..., Any]) -> bool:
    try:
        returned = typing.get_type_hints(function).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returned, type) and issubclass(returned, AppError)


def producers(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The names in ``module`` that make a client-facing error from a message argument."""
    made: dict[str, Callable[..., Any]] = {}
    for name, value in vars(module).items():
        is_class = isinstance(value, type) and issubclass(value, AppError)
        if is_class or (inspect.isfunction(value) and returns_app_error(value)):
            made[name] = value
    return made


def message_node(call: ast.Call, target: Callable[..., Any]) -> ast.expr | None:
    """The AST node passed as ``target``'s message, or None when the call does not pass one."""
    signature = inspect.signature(target)
    if any(isinstance(arg, ast.Starred) for arg in call.args):
        return None
    keywords = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
    try:
        bound = signature.bind_partial(*call.args, **keywords)
    except TypeError:
        return None
    for name in MESSAGE_PARAMETERS:
        if name in bound.arguments:
            node: ast.expr = bound.arguments[name]
            return node
    return None


def texts_of(node: ast.expr, module: ModuleType) -> list[str]:
    """A literal's text; an f-string with its fields as a placeholder; a module constant; what
    a function of the module that builds the message returns. A parameter passed through gives
    nothing: its own callers are checked."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts = [
            str(value.value) if isinstance(value, ast.Constant) else PLACEHOLDER
            for value in node.values
        ]
        return ["".join(parts)]
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str):
        return [getattr(module, node.id)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = getattr(module, node.func.id, None)
        if inspect.isfunction(function):
            source = ast.parse(textwrap.dedent(inspect.getsource(function)))
            returns = [n.value for n in ast.walk(source) if isinstance(n, ast.Return) and n.value]
            return [text for value in returns for text in texts_of(value, module)]
    return []


def class_bases(tree: ast.Module, module: ModuleType) -> dict[int, Callable[..., Any]]:
    """For each ``super().__init__`` call inside an error class: the parent's ``__init__``."""
    found: dict[int, Callable[..., Any]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(module, node.name, None)
        if not (isinstance(cls, type) and issubclass(cls, AppError)):
            continue
        parent = cls.__mro__[1]
        if not issubclass(parent, AppError):  # AppError itself
            continue
        for inner in ast.walk(node):
            if (
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Attribute)
                and inner.func.attr == "__init__"
                and isinstance(inner.func.value, ast.Call)
                and isinstance(inner.func.value.func, ast.Name)
                and inner.func.value.func.id == "super"
            ):
                found[id(inner)] = parent
    return found


def callee(
    func: ast.expr, module: ModuleType, names: dict[str, Callable[..., Any]]
) -> Callable[..., Any] | None:
    """What ``name(...)`` or ``other_module.name(...)`` calls, when it makes an error."""
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        other = getattr(module, func.value.id, None)
        if isinstance(other, ModuleType):
            return producers(other).get(func.attr)
    return None


def collected_messages() -> list[Message]:
    messages = [Message(f"default {code}", text) for code, text in _DEFAULT_MESSAGE.items()]
    for module in modules():
        path = Path(module.__file__ or "")
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = producers(module)
        supers = class_bases(tree, module)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            target: Callable[..., Any] | None = supers.get(id(node))
            if target is None:
                target = callee(node.func, module, names)
            if target is None:
                continue
            argument = message_node(node, target)
            where = f"{path.relative_to(SOURCE.parent)}:{node.lineno}"
            for text in [] if argument is None else texts_of(argument, module):
                messages.append(Message(where, text))
    return messages


def client_names() -> set[str]:
    """What a client writes: the schema's arguments and input fields, the request parameters."""
    schema = build_schema()._schema
    names = set(REQUEST_PARAMETERS)
    for graphql_type in schema.type_map.values():
        if isinstance(graphql_type, GraphQLInputObjectType):
            names.update(graphql_type.fields)
        elif isinstance(graphql_type, GraphQLObjectType):
            for field in graphql_type.fields.values():
                names.update(field.args)
    return names


MESSAGES = collected_messages()
CLIENT_NAMES = client_names()
_LEADING_NAME = re.compile(r"[a-z][A-Za-z0-9_]*")


def style_problems(text: str) -> list[str]:
    problems = []
    if text != text.strip() or "  " in text:
        problems.append("stray whitespace")
    if not text.endswith("."):
        problems.append("does not end with a period")
    first = text[:1]
    leading = _LEADING_NAME.match(text)
    starts_well = (
        first.isupper()
        or text.startswith(PLACEHOLDER)
        or (leading is not None and leading.group() in CLIENT_NAMES)
    )
    if not starts_well:
        problems.append("starts neither with a capital letter nor with a name the client wrote")
    return problems


def test_the_collector_finds_the_raise_sites_of_every_kind() -> None:
    texts = {message.text for message in MESSAGES}
    # one of each: a resolver literal, an f-string, a subclass's super().__init__, a helper
    # function annotated to return an AppError, a module constant, a default message
    assert "The token has expired." in texts  # invalid_token(...)
    assert "Authorization is temporarily unavailable." in texts  # super().__init__ in a subclass
    assert f"The request body exceeds {PLACEHOLDER} bytes." in texts  # f-string
    assert "PersistedQueryNotFound" in texts  # a module constant
    assert "Not found." in texts  # default message
    assert f"You may not {PLACEHOLDER} note {PLACEHOLDER}: only {PLACEHOLDER} may." in texts
    assert any(message.where.startswith("pcf_api/graphql/validation.py") for message in MESSAGES)
    assert len(MESSAGES) > 60


@pytest.mark.parametrize(
    "message", [m for m in MESSAGES if m.text not in PROTOCOL_MESSAGES], ids=str
)
def test_every_message_is_one_sentence_in_sentence_case(message: Message) -> None:
    assert style_problems(message.text) == []


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("author must be the caller", True),  # no period
        ("give a title, a content or both.", True),  # lower case, not a client's name
        ("note notes:x does not exist.", True),  # `note` is a field the client reads, not writes
        ("Trailing space. ", True),
        ("limit must be between 1 and 100, not 0.", False),
        ("The token has expired.", False),
        (f"{PLACEHOLDER} must be an object.", False),
    ],
)
def test_the_style_rule_itself(text: str, wrong: bool) -> None:
    assert bool(style_problems(text)) is wrong
