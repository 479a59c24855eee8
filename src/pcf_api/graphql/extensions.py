"""Strawberry extensions for the WebSocket path, which runs through Strawberry's own executor.

The HTTP path applies the same limits and error format itself (see http.py); these hooks make
subscriptions behave the same: query limits before execution, and every error with a stable
code, the trace id and a timestamp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType
from strawberry.extensions import SchemaExtension

from pcf_api.errors import AppError
from pcf_api.graphql.context import GraphQLContext
from pcf_api.graphql.documents import fragments_of, root_field_names
from pcf_api.graphql.formatting import format_error
from pcf_api.graphql.limits import QueryLimits, analyze_document, check
from pcf_api.ratelimit import Budget


class QueryLimitsExtension(SchemaExtension):
    def __init__(self, *, limits: QueryLimits) -> None:
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        # Before validation runs: a pre-execution error set here is returned as is.
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            try:
                check(
                    analyze_document(document),
                    context.operation_name,
                    context.variables,
                    self.limits,
                )
            except AppError as error:
                context.pre_execution_errors = [GraphQLError(error.message, original_error=error)]
        yield


class RateLimitExtension(SchemaExtension):
    """Queries and mutations over the WebSocket spend from the same budgets as over HTTP (a
    subscription spends when it starts, see ``schema._events``)."""

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        graphql_context = context.context
        if document is not None and isinstance(graphql_context, GraphQLContext):
            operation = next(
                (
                    definition
                    for definition in document.definitions
                    if isinstance(definition, OperationDefinitionNode)
                    and (
                        context.operation_name is None or _named(definition, context.operation_name)
                    )
                ),
                None,
            )
            if operation is not None and operation.operation is not OperationType.SUBSCRIPTION:
                budget = (
                    Budget.MUTATION
                    if operation.operation is OperationType.MUTATION
                    else Budget.QUERY
                )
                costs = {budget: 1}
                searches = root_field_names(operation, fragments_of(document)).count("searchNotes")
                if searches:
                    costs[Budget.SEARCH] = searches
                try:
                    await graphql_context.services.rate_limiter.spend(
                        graphql_context.client_id, costs
                    )
                except AppError as error:
                    context.pre_execution_errors = [
                        GraphQLError(error.message, original_error=error)
                    ]
        yield


def _named(operation: OperationDefinitionNode, name: str) -> bool:
    return operation.name is not None and operation.name.value == name


class ErrorFormatExtension(SchemaExtension):
    def on_stream_result(self, result: Any) -> Iterator[None]:
        errors = getattr(result, "errors", None)
        if errors:
            trace_id = getattr(self.execution_context.context, "trace_id", "")
            result.errors = [_formatted(error, trace_id) for error in errors]
        yield


def _formatted(error: GraphQLError, trace_id: str) -> GraphQLError:
    formatted = format_error(error, trace_id)
    return GraphQLError(
        formatted["message"],
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=formatted["extensions"],
    )
