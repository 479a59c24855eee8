"""Admission: what every GraphQL operation passes before it executes, over HTTP and WebSocket.

One pipeline, so that a rule added once holds on both transports:

1. open: start-up has finished (until then every operation is refused with 503);
2. identity: who is calling (a bearer token, or in development the demo user);
   document: the text to parse — a persisted or trusted document named by hash, and with
   ``only_trusted_documents`` nothing else (``persisted.DocumentPolicy``), before any parsing;
3. argument values: text the database cannot store and integers out of range are refused as
   INVALID_INPUT (``inputs``), before any limit is computed from them;
4. limits: depth, aliases and complexity of the selected operation;
5. rate budgets: one of the operation's kind, one search per ``searchNotes``.

Parsing and validation happen before step 3 (the HTTP path takes them from the document cache,
the WebSocket path from Strawberry), so this module works on what they produce.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from graphql import OperationType

from pcf_api.auth.identity import AuthenticationError, Authenticator, Identity
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.limits import DocumentShape, QueryLimits, check
from pcf_api.graphql.persisted import DocumentPolicy
from pcf_api.observability.logging import note_subject
from pcf_api.ratelimit import Budget, RateLimiter

STARTING_RETRY_AFTER = "5"
NO_QUERY = "The request has no query."

_BUDGETS = {
    OperationType.QUERY: Budget.QUERY,
    OperationType.MUTATION: Budget.MUTATION,
    OperationType.SUBSCRIPTION: Budget.SUBSCRIPTION,
}


def budgets(
    operation: OperationType | None, root_fields: Sequence[str], *, subscription: bool = True
) -> dict[Budget, int]:
    """What an operation spends: one of its kind, and one search per ``searchNotes``.

    ``subscription=False`` leaves a subscription's own budget out: on a socket it is spent when
    the stream starts (``schema._events``), where its slot is taken."""
    costs: dict[Budget, int] = {}
    if operation is not None and (subscription or operation is not OperationType.SUBSCRIPTION):
        costs[_BUDGETS[operation]] = 1
    searches = list(root_fields).count("searchNotes")
    if searches:
        costs[Budget.SEARCH] = searches
    return costs


_PAYLOAD_TOKEN_KEYS = ("Authorization", "authorization", "authToken")
_HEADER_TOKEN_KEYS = ("Authorization", "authorization")
_BEARER_PREFIX = re.compile(r"bearer\s", re.IGNORECASE)


def connection_authorization(payload: Mapping[str, Any] | None) -> str | None:
    """The ``Authorization`` value a WebSocket client sent in its ``connection_init`` payload
    (browsers cannot set headers on the upgrade): ``Authorization`` / ``authorization``, with or
    without ``Bearer ``, ``authToken``, or ``headers.Authorization`` / ``headers.authorization``.
    Returned as ``Bearer <token>`` for ``identify``; None when the payload carries no token. A
    token that is not a string is refused as invalid_request (401)."""
    if not payload:
        return None
    candidates = [payload.get(key) for key in _PAYLOAD_TOKEN_KEYS]
    headers = payload.get("headers")
    if isinstance(headers, Mapping):
        candidates += [headers.get(key) for key in _HEADER_TOKEN_KEYS]
    for value in candidates:
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise AuthenticationError(
                "invalid_request", "The connection_init token must be a string."
            )
        token = value.strip()
        return token if _BEARER_PREFIX.match(token) else f"Bearer {token}"
    return None


class Admission:
    """The admission steps, with the collaborators they need; shared by both transports."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        rate_limiter: RateLimiter,
        limits: QueryLimits,
        documents: DocumentPolicy | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter
        self.limits = limits
        self.documents = documents
        self.is_open = False

    def open(self) -> None:
        """Start admitting operations: start-up has finished."""
        self.is_open = True

    def ensure_open(self) -> None:
        if not self.is_open:
            raise AppError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "The service is starting.",
                headers={"Retry-After": STARTING_RETRY_AFTER},
            )

    async def document(
        self, query: str, extensions: Mapping[str, Any] | None, document_id: str | None = None
    ) -> str:
        """The document text to parse: the query itself, or the persisted or trusted document
        the request names (``persisted.DocumentPolicy``). Refusals raise AppError
        (``PERSISTED_QUERY_NOT_FOUND``, ``DOCUMENT_NOT_TRUSTED``, ``INVALID_INPUT``)."""
        policy = self.documents
        if policy is None:
            if not query:
                raise AppError(ErrorCode.INVALID_INPUT, NO_QUERY, extensions={"field": "query"})
            return query
        return await policy.document(query, extensions, document_id)

    async def identify(self, authorization: str | None, demo_user: str | None) -> Identity | None:
        """The caller: a bearer token's subject, or (development) the demo user; None when the
        request carries no credentials and no demo user is configured. Bad tokens raise
        AuthenticationError (401)."""
        if authorization is None and self.authenticator.demo_user is None:
            return None
        identity = await self.authenticator.authenticate(authorization, demo_user)
        note_subject(identity.subject)  # the access line says who (as log.subject renders it)
        return identity

    async def require_identity(self, authorization: str | None, demo_user: str | None) -> Identity:
        """As ``identify``, but a caller without credentials is refused as well."""
        identity = await self.identify(authorization, demo_user)
        if identity is None:
            raise AuthenticationError(None, "Authentication is required.")
        return identity

    async def admit(
        self,
        *,
        shape: DocumentShape,
        operation: OperationType | None,
        root_fields: Sequence[str],
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        client_id: str,
        spend_subscription: bool = True,
    ) -> int:
        """Check the operation's argument values and limits, then spend its budgets; return
        its complexity. An operation refused by either spends nothing."""
        selected = shape.operation(operation_name)
        if selected is not None:
            selected.arguments.check(variables or {})
        complexity = check(shape, operation_name, variables or {}, self.limits)
        costs = budgets(operation, root_fields, subscription=spend_subscription)
        await self.rate_limiter.spend(client_id, costs)
        return complexity
