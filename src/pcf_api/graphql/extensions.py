"""Strawberry extensions for the WebSocket path, which runs through Strawberry's own executor.

The HTTP path calls the admission pipeline and formats errors itself (see http.py); these hooks
make operations on a socket behave the same: admission before execution, and every error with a
stable code, the trace id and a timestamp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from pcf_api.errors import AppError
from pcf_api.graphql.admission import Admission
from pcf_api.graphql.context import GraphQLContext
from pcf_api.graphql.documents import fragments_of, root_field_names
from pcf_api.graphql.formatting import format_error
from pcf_api.graphql.limits import analyze_document


class AdmissionExtension(SchemaExtension):
    """Operations on a socket pass the same admission as over HTTP: limits, then budgets.

    Identity was settled once for the socket (upgrade header or ``connection_init``); a
    subscription's own budget is spent when its stream starts (see ``schema._events``)."""

    def __init__(self, *, admission: Admission) -> None:
        self.admission = admission

    def on_parse(self) -> Iterator[None]:
        # Before parsing: with only trusted documents, any other text is refused unparsed. The
        # operation then stands on an empty placeholder document and the refusal is its
        # pre-execution error, which skips validation and execution.
        context = self.execution_context
        policy = self.admission.documents
        if policy is not None and policy.only_trusted and context.graphql_document is None:
            try:
                policy.check_text(context.query or "")
            except AppError as error:
                context.graphql_document = _placeholder(context.operation_name)
                context.pre_execution_errors = [GraphQLError(error.message, original_error=error)]
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        # Before validation runs: a pre-execution error set here is returned as is.
        context = self.execution_context
        document = context.graphql_document
        graphql_context = context.context
        if (
            document is not None
            and isinstance(graphql_context, GraphQLContext)
            and not context.pre_execution_errors
        ):
            operation = _selected(document, context.operation_name)
            try:
                await self.admission.admit(
                    shape=analyze_document(document),
                    operation=operation.operation if operation is not None else None,
                    root_fields=(
                        root_field_names(operation, fragments_of(document))
                        if operation is not None
                        else ()
                    ),
                    operation_name=context.operation_name,
                    variables=context.variables,
                    client_id=graphql_context.client_id,
                    spend_subscription=False,
                )
            except AppError as error:
                context.pre_execution_errors = [GraphQLError(error.message, original_error=error)]
        yield


def _placeholder(operation_name: str | None) -> DocumentNode:
    """An empty subscription with the requested operation's name: never validated nor run."""
    return DocumentNode(
        definitions=(
            OperationDefinitionNode(
                operation=OperationType.SUBSCRIPTION,
                name=NameNode(value=operation_name) if operation_name else None,
                variable_definitions=(),
                directives=(),
                selection_set=SelectionSetNode(selections=()),
            ),
        )
    )


def _selected(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    return next(
        (
            definition
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
            and (name is None or (definition.name is not None and definition.name.value == name))
        ),
        None,
    )


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
