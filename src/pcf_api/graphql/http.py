"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/), as a thin ASGI app.

Why not Strawberry's view: measured, the time of a small query goes to per-request framework
work, not to GraphQL execution. This path reads the body once, takes the parsed and validated
document from a cache, executes it with graphql-core directly on Strawberry's schema, and encodes
with orjson. Strawberry still provides the schema, the resolvers and the WebSocket protocols.

Status codes: with ``Accept: application/graphql-response+json`` a request that cannot be
executed (unparsable, invalid, bad variables) gets 400; with ``application/json`` (the legacy
media type) such responses are 200. Query-limit violations are 400 either way; a mutation over GET
is 405; a database down for long is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard
from urllib.parse import parse_qs

import orjson
from graphql import ExecutionResult, GraphQLError, OperationType, execute
from graphql.pyutils import is_awaitable
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from pcf_api.auth.authorizer import AuthorizationUnavailable
from pcf_api.auth.identity import AuthenticationError
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.admission import Admission
from pcf_api.graphql.context import GraphQLContext, Services, make_context
from pcf_api.graphql.documents import DocumentCache, PreparedDocument
from pcf_api.graphql.formatting import app_error, format_error
from pcf_api.observability.metrics import Metrics
from pcf_api.observability.tracecontext import current_trace_id
from pcf_api.observability.tracing import Tracing, optional_span
from pcf_api.store.models import Note

GRAPHQL_PATH = "/graphql"
GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_ALLOWED = "GET, POST"
_JSON_BODIES = frozenset({JSON, GRAPHQL_RESPONSE})
"""The content types a POST body may have: JSON, which a browser only sends cross-site after
a CORS preflight. ``application/graphql-response+json`` is accepted as a body type for clients
that send their ``Accept`` value as ``Content-Type``."""


class GraphQLRequest:
    __slots__ = ("document_id", "extensions", "operation_name", "query", "variables")

    def __init__(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None = None,
        document_id: str | None = None,
    ):
        self.query = query  # "" when the request names a persisted document instead
        self.variables = variables
        self.operation_name = operation_name
        self.extensions = extensions
        self.document_id = document_id  # ``documentId`` / Relay's ``doc_id``


def _request_error(message: str, **extensions: Any) -> AppError:
    return AppError(ErrorCode.INVALID_INPUT, message, extensions=extensions)


def _json_object(params: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``variables`` or ``extensions``: an object, given as such (POST) or as JSON text (GET)."""
    value = params.get(name)
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            raise _request_error(f"{name} is not valid JSON.", field=name) from None
    if value is not None and not isinstance(value, dict):
        raise _request_error(f"{name} must be an object.", field=name)
    return value


def _from_params(params: Mapping[str, Any]) -> GraphQLRequest:
    query = params.get("query")
    if query is not None and not isinstance(query, str):
        raise _request_error("query must be a string.", field="query")
    variables = _json_object(params, "variables")
    extensions = _json_object(params, "extensions")
    document_id = params.get("documentId", params.get("doc_id"))
    if document_id is not None and (not isinstance(document_id, str) or not document_id):
        raise _request_error("documentId must be a non-empty string.", field="documentId")
    if query is None or not query.strip():
        # A persisted document may be named instead (persisted.py); else there is nothing to run.
        if document_id is None and (extensions is None or "persistedQuery" not in extensions):
            raise _request_error("The request has no query.", field="query")
        query = ""
    operation_name = params.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise _request_error("operationName must be a string.", field="operationName")
    return GraphQLRequest(query, variables, operation_name or None, extensions, document_id)


def _accepts_graphql_response(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return GRAPHQL_RESPONSE.encode() in value
    return False


def _header(scope: Scope, wanted: bytes) -> str:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return ""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass(slots=True)
class Observation:
    """What the metrics say about one request; filled in as the request is understood."""

    operation_type: str = "unknown"
    operation_name: str | None = None
    status: str = ErrorCode.INTERNAL_ERROR.value


_NEVER_AWAITABLE = frozenset({str, int, float, bool, type(None), list, datetime, Note})


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    """graphql-core asks this of every resolved value (45 times for a page of ten notes); most
    are plain values whose type answers at once."""
    return type(value) not in _NEVER_AWAITABLE and is_awaitable(value)


def _unavailable(errors: Sequence[GraphQLError]) -> AppError | None:
    for error in errors:
        original = error.original_error
        if isinstance(original, AppError) and original.code is ErrorCode.SERVICE_UNAVAILABLE:
            return original
    return None


class GraphQLHTTP:
    """The /graphql endpoint for HTTP; WebSocket requests go to ``websocket.SubscriptionsApp``."""

    def __init__(
        self,
        *,
        admission: Admission,
        services: Services,
        documents: DocumentCache,
        introspection: bool,
        graphiql: str | None,
        execution_timeout: float,
        metrics: Metrics | None,
        tracing: Tracing | None = None,
    ) -> None:
        self.admission = admission
        self.services = services
        self.documents = documents
        self.metrics = metrics
        self.tracing = tracing
        self.introspection = introspection
        self.graphiql = graphiql
        """The GraphiQL page's HTML (``graphiql.page``), None when GraphiQL is off."""
        self.execution_timeout = execution_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        observation = Observation()
        try:
            response = await self.handle(scope, receive, observation)
        except AppError as error:  # answered by the error boundary, counted here
            observation.status = error.code.value
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe_graphql(
                    observation.operation_type,
                    observation.operation_name,
                    observation.status,
                    time.perf_counter() - started,
                )
        await response(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, observation: Observation) -> Response:
        method = scope["method"]
        wants_ide = "text/html" in _header(scope, b"accept") and not scope["query_string"]
        if method == "GET" and self.graphiql is not None and wants_ide:
            observation.status = "ok"
            return HTMLResponse(self.graphiql)
        if method not in ("GET", "POST"):
            raise AppError(ErrorCode.METHOD_NOT_ALLOWED, headers={"Allow": _ALLOWED})
        self.admission.ensure_open()
        services, documents = self.services, self.documents
        modern = _accepts_graphql_response(scope)
        trace_id = current_trace_id.get() or ""
        try:
            request = await self._parse_request(scope, receive, method)
            identity = await self.admission.identify(
                _header(scope, b"authorization") or None, _header(scope, b"x-demo-user") or None
            )
            if identity is None and not self.introspection:
                raise AuthenticationError(None, "Authentication is required.")
            query = request.query
            if self.admission.documents is not None or not query:  # persisted / trusted
                query = await self.admission.document(
                    query, request.extensions, request.document_id
                )
            prepared = documents.cached(query)
            if prepared is None:  # parsed and validated now: worth a span
                with self._span("graphql.prepare"):
                    prepared = documents.prepare(query)
            operation = prepared.operation_type(request.operation_name)
            observation.operation_type = operation.value if operation is not None else "unknown"
            observation.operation_name = prepared.operation_name(request.operation_name)
            if method == "GET" and operation is not None and operation != OperationType.QUERY:
                raise AppError(
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"{operation.value} operations are only accepted over POST.",
                    headers={"Allow": "POST"},
                )
            self._refuse_during_long_outage(services, prepared, request.operation_name)
            if prepared.errors or prepared.document is None:
                return self._respond(
                    {"errors": [format_error(error, trace_id) for error in prepared.errors]},
                    400 if modern else 200,
                    modern,
                    observation,
                )
            if identity is None and not prepared.is_introspection(request.operation_name):
                raise AuthenticationError(None, "Authentication is required.")
            client = scope.get("client")
            client_id = identity.subject if identity is not None else client[0] if client else ""
            complexity = 0
            if prepared.shape is not None:
                complexity = await self.admission.admit(
                    shape=prepared.shape,
                    operation=operation,
                    root_fields=prepared.fields(request.operation_name),
                    operation_name=request.operation_name,
                    variables=request.variables,
                    client_id=client_id,
                )
        except AppError as error:
            return self._respond(
                {"errors": [app_error(error, trace_id)]},
                error.code.http_status,
                modern,
                observation,
                headers=error.headers,
            )
        context = make_context(services, identity=identity, trace_id=trace_id, client_id=client_id)
        result = await self._execute(documents, prepared, request, context)
        return self._result_response(result, trace_id, modern, complexity, observation)

    def _span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """A child span of the request's, when tracing is on."""
        return optional_span(self.tracing, name, "graphql", attributes)

    @staticmethod
    def _refuse_during_long_outage(
        services: Services, prepared: PreparedDocument, operation_name: str | None
    ) -> None:
        """Past the threshold, database-dependent requests get a plain 503 + Retry-After, so
        load balancers and clients back off instead of waiting out every deadline."""
        threshold = services.settings.database.unavailable_after_seconds
        down_for = services.store.availability.down_for()
        if down_for > threshold and prepared.needs_database(operation_name):
            raise AppError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"The database has been unavailable for {down_for:.0f} s.",
                headers={"Retry-After": "5"},
            )

    async def _parse_request(self, scope: Scope, receive: Receive, method: str) -> GraphQLRequest:
        if method == "GET":
            query_string = scope["query_string"].decode("latin-1")
            params = {key: values[-1] for key, values in parse_qs(query_string).items()}
            return _from_params(params)
        content_type = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
        if content_type not in _JSON_BODIES:
            # CSRF prevention: a browser sends a cross-site POST without a preflight only with
            # a "simple" content type (text/plain, form encodings) or none; refusing those here,
            # before the body is read, means such a request can never execute (docs/api.md).
            raise AppError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                extensions={"contentType": content_type[:100] or None},
            )
        body = await _read_body(receive)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _request_error("The body is not valid JSON.") from None
        if isinstance(payload, list):
            raise _request_error("Batched requests are not supported.")
        if not isinstance(payload, dict):
            raise _request_error("The body must be a JSON object.")
        return _from_params(payload)

    async def _execute(
        self,
        documents: DocumentCache,
        prepared: PreparedDocument,
        request: GraphQLRequest,
        context: GraphQLContext,
    ) -> ExecutionResult | AppError:
        document = prepared.document
        if document is None:  # prepared documents with errors never get here
            raise AppError(ErrorCode.INTERNAL_ERROR)
        operation = prepared.operation_type(request.operation_name)
        try:
            async with asyncio.timeout(self.execution_timeout):
                with self._span(
                    "graphql.execute",
                    operation_type=operation.value if operation is not None else "unknown",
                ):
                    outcome = execute(
                        documents.schema,
                        document,
                        context_value=context,
                        variable_values=request.variables,
                        operation_name=request.operation_name,
                        is_awaitable=_is_awaitable,
                    )
                    result = await outcome if inspect.isawaitable(outcome) else outcome
        except TimeoutError:
            return AppError(
                ErrorCode.TIMEOUT,
                f"The query did not finish within {self.execution_timeout:g} s.",
            )
        if context.response_extensions:
            result.extensions = {**(result.extensions or {}), **context.response_extensions}
        return result

    def _result_response(
        self,
        result: ExecutionResult | AppError,
        trace_id: str,
        modern: bool,
        complexity: int,
        observation: Observation,
    ) -> Response:
        headers = {"X-Query-Complexity": str(complexity)}
        if isinstance(result, AppError):
            return self._respond(
                {"errors": [app_error(result, trace_id)]},
                result.code.http_status,
                modern,
                observation,
                headers=headers,
            )
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [format_error(error, trace_id) for error in result.errors]
        body["data"] = result.data
        if result.extensions:
            body["extensions"] = result.extensions
        status = 200
        if result.data is None and result.errors:
            # Nothing executed: the variables did not fit the operation (a request error).
            status = 400 if modern and all(not error.path for error in result.errors) else 200
        unavailable = _unavailable(result.errors or ())
        if unavailable is not None:
            # A dependency is away: the GraphQL error says so and Retry-After says when to try
            # again. Authorization failing closed is a 503 as well (nothing can be decided);
            # a write refused while the database is briefly away stays a GraphQL result, and a
            # plain 503 comes once it has been away past unavailable_after_seconds.
            headers.update(unavailable.headers or {})
            if isinstance(unavailable, AuthorizationUnavailable):
                status = unavailable.code.http_status
        return self._respond(body, status, modern, observation, headers=headers)

    @staticmethod
    def _respond(
        body: dict[str, Any],
        status: int,
        modern: bool,
        observation: Observation,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        errors = body.get("errors")
        observation.status = str(errors[0]["extensions"]["code"]) if errors else "ok"
        return Response(
            orjson.dumps(body),
            status_code=status,
            media_type=GRAPHQL_RESPONSE if modern else JSON,
            headers=dict(headers or {}),
        )
