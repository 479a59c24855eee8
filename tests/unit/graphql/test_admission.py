"""The admission pipeline both transports call: open, identity, limits, then rate budgets."""

from __future__ import annotations

from typing import cast

import pytest
from graphql import FieldNode, OperationDefinitionNode, OperationType, parse

from pcf_api.auth.identity import AuthenticationError, Authenticator
from pcf_api.config import RateLimitSettings
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.admission import Admission, budgets
from pcf_api.graphql.limits import QueryLimits, analyze_document
from pcf_api.ratelimit import Budget, RateLimiter

pytestmark = pytest.mark.anyio

NOTES = "{ notes { totalCount } }"
SEARCH_TWICE = '{ a: searchNotes(query: "x") { id } b: searchNotes(query: "y") { id } }'


def admission(
    *, demo_user: str | None = None, limits: QueryLimits | None = None, **rates: str
) -> Admission:
    return Admission(
        authenticator=Authenticator(None, demo_user=demo_user),
        rate_limiter=RateLimiter(RateLimitSettings(**rates)),
        limits=limits or QueryLimits(),
    )


async def admit(gate: Admission, query: str, client_id: str = "alice", **kwargs: object) -> int:
    document = parse(query)
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    selections = operation.selection_set.selections
    assert all(isinstance(selection, FieldNode) for selection in selections)
    root_fields = tuple(cast(FieldNode, selection).name.value for selection in selections)
    return await gate.admit(
        shape=analyze_document(document),
        operation=OperationType.QUERY,
        root_fields=root_fields,
        operation_name=None,
        variables=None,
        client_id=client_id,
        **kwargs,  # type: ignore[arg-type]
    )


def test_nothing_is_admitted_until_start_up_has_finished() -> None:
    gate = admission()
    with pytest.raises(AppError) as refused:
        gate.ensure_open()
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert refused.value.headers == {"Retry-After": "5"}
    gate.open()
    gate.ensure_open()


async def test_a_caller_without_credentials_is_anonymous_unless_a_demo_user_is_set() -> None:
    assert await admission().identify(None, None) is None
    demo = await admission(demo_user="demo").identify(None, None)
    assert demo is not None
    assert demo.subject == "demo"
    acting = await admission(demo_user="demo").identify(None, "bob")
    assert acting is not None
    assert acting.subject == "bob"


async def test_require_identity_refuses_an_anonymous_caller() -> None:
    with pytest.raises(AuthenticationError):
        await admission().require_identity(None, None)


async def test_a_bearer_token_without_any_key_source_is_refused() -> None:
    with pytest.raises(AuthenticationError):
        await admission(demo_user="demo").identify("Bearer abc.def.ghi", None)


async def test_admit_returns_the_complexity_and_spends_one_query() -> None:
    gate = admission(queries="2/minute")
    assert await admit(gate, NOTES) > 0
    await admit(gate, NOTES)
    with pytest.raises(AppError) as refused:
        await admit(gate, NOTES)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert gate.rate_limiter.rejections[Budget.QUERY] == 1


async def test_an_operation_over_the_limits_is_refused_and_spends_nothing() -> None:
    gate = admission(limits=QueryLimits(max_aliases=1), queries="1/minute")
    with pytest.raises(AppError) as refused:
        await admit(gate, SEARCH_TWICE)
    assert refused.value.code is ErrorCode.TOO_MANY_ALIASES
    await admit(gate, NOTES)  # the one query of the budget is still there


async def test_argument_values_are_refused_before_the_limits_and_spend_nothing() -> None:
    gate = admission(limits=QueryLimits(max_complexity=60), queries="1/minute")
    with pytest.raises(AppError) as out_of_range:
        await admit(gate, "{ notes(limit: 5000) { edges { node { content } } } }")
    with pytest.raises(AppError) as unstorable:
        await admit(gate, '{ searchNotes(query: "\\u0000") { id } }')

    assert out_of_range.value.code is ErrorCode.INVALID_INPUT  # not QUERY_TOO_COMPLEX
    assert out_of_range.value.extensions == {"field": "limit", "constraint": "range"}
    assert unstorable.value.extensions == {"field": "query", "constraint": "no_nul"}
    await admit(gate, NOTES)  # the one query of the budget is still there


async def test_each_search_spends_from_the_search_budget() -> None:
    gate = admission(search="3/minute")
    await admit(gate, SEARCH_TWICE)
    with pytest.raises(AppError) as refused:
        await admit(gate, SEARCH_TWICE)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert gate.rate_limiter.rejections[Budget.SEARCH] == 1


def test_budgets_per_operation_kind() -> None:
    assert budgets(OperationType.QUERY, ("notes",)) == {Budget.QUERY: 1}
    assert budgets(OperationType.MUTATION, ("createNote",)) == {Budget.MUTATION: 1}
    assert budgets(OperationType.SUBSCRIPTION, ("noteCreated",)) == {Budget.SUBSCRIPTION: 1}
    assert budgets(OperationType.QUERY, ("searchNotes", "searchNotes")) == {
        Budget.QUERY: 1,
        Budget.SEARCH: 2,
    }
    assert budgets(None, ()) == {}


def test_a_subscription_on_a_socket_spends_its_own_budget_later() -> None:
    assert budgets(OperationType.SUBSCRIPTION, ("noteCreated",), subscription=False) == {}
