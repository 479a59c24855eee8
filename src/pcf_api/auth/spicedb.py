"""The SpiceDB backend: its HTTP (JSON) API behind a circuit breaker.

Endpoints: ``/v1/permissions/check`` for one decision, ``/v1/permissions/checkbulk`` for lists,
``/v1/relationships/write`` (OPERATION_TOUCH) on create and share, ``/v1/relationships/delete``
on unshare and delete, ``/v1/schema/read`` as the health probe. Every call carries the
pre-shared key as ``Authorization: Bearer …`` and a timeout.

Object ids. SpiceDB accepts ``[a-zA-Z0-9/_|\\-=+]`` in ids, while note ids contain ``:`` and
token subjects may contain ``@``, ``.`` or even ``*`` (SpiceDB's wildcard). Ids are therefore
escaped: any other character, and ``=`` itself, becomes ``=XX`` per UTF-8 byte
(``notes:01H…`` → ``notes=3A01H…``). The mapping is injective, so two ids never collide.

Consistency. Checks use ``minimizeLatency`` (SpiceDB's cache, possibly a few seconds old) unless
``fully_consistent`` is set — except for notes this process wrote recently: those are checked
``atLeastAsFresh`` the ZedToken of the latest write, so a note is readable by its creator the
moment it exists and a revoked share is not honoured from an older snapshot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import structlog
from cachetools import LRUCache

from pcf_api.auth.policy import NOTE, Action, BackendUnavailable, Relation, Resource, Role
from pcf_api.resilience import CircuitBreaker, CircuitOpenError
from pcf_api.secretfiles import RotatingSecret, fixed

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

USER = "user"
HAS_PERMISSION = "PERMISSIONSHIP_HAS_PERMISSION"
NO_PERMISSION = "PERMISSIONSHIP_NO_PERMISSION"
CONDITIONAL_PERMISSION = "PERMISSIONSHIP_CONDITIONAL_PERMISSION"
_PERMISSIONSHIPS = frozenset({HAS_PERMISSION, NO_PERMISSION, CONDITIONAL_PERMISSION})
# gRPC codes of a bulk item SpiceDB could not evaluate right now: DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE.
_TRANSIENT_CODES = frozenset({4, 8, 10, 14})
_SAFE_ID = re.compile(r"[a-zA-Z0-9/_|\-+]")
BULK_CHUNK = 500
RECENT_WRITES = 10_000


class SpiceDBRequestError(Exception):
    """SpiceDB answered and refused the request as invalid: a bug here, not an outage."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"SpiceDB refused the request (HTTP {status}, code {code}): {message}")


def escape_id(value: str) -> str:
    """An object id SpiceDB accepts, distinct for distinct values (see the module docstring)."""
    return "".join(
        char if _SAFE_ID.fullmatch(char) else "".join(f"={byte:02X}" for byte in char.encode())
        for char in value
    )


class SpiceDBBackend:
    """Decisions and relationships in SpiceDB. Outages (transport errors, timeouts, 5xx, 429,
    a refused pre-shared key, an open breaker) raise BackendUnavailable."""

    name = "spicedb"

    def __init__(
        self,
        endpoint: str,
        preshared_key: str | RotatingSecret,
        *,
        timeout: float = 2.0,
        fully_consistent: bool = False,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.breaker = CircuitBreaker(
            "spicedb",
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            is_failure=_is_outage,
            clock=clock,
        )
        self.fully_consistent = fully_consistent
        key = fixed("authz.spicedb_preshared_key", preshared_key)
        self._client = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
            headers={"Authorization": f"Bearer {key.value}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )
        key.subscribe(self._use_key)
        self._latest_token: str | None = None
        self._recent_writes: LRUCache[str, bool] = LRUCache(maxsize=RECENT_WRITES)

    def _use_key(self, key: RotatingSecret) -> None:
        """A rotated pre-shared key: every request from now on carries it."""
        self._client.headers["Authorization"] = f"Bearer {key.value}"

    async def check(self, subject: str, resource: Resource, action: Action) -> bool:
        note_id = _note_id(resource)
        body = {
            "consistency": self._consistency([note_id]),
            "resource": _object(NOTE, note_id),
            "permission": action.value,
            "subject": _subject(subject),
        }
        answer = await self._post("/v1/permissions/check", body)
        return _permissionship(answer) == HAS_PERMISSION

    async def filter(
        self, subject: str, action: Action, resources: Sequence[Resource]
    ) -> set[Resource]:
        unique = list(dict.fromkeys(resources))
        pairs = [(_note_id(resource), subject) for resource in unique]
        allowed = await self._check_bulk(action, pairs)
        return {resource for resource, yes in zip(unique, allowed, strict=True) if yes}

    async def audience(
        self, resource: Resource, action: Action, subjects: Sequence[str]
    ) -> set[str]:
        note_id = _note_id(resource)
        unique = list(dict.fromkeys(subjects))
        allowed = await self._check_bulk(action, [(note_id, subject) for subject in unique])
        return {subject for subject, yes in zip(unique, allowed, strict=True) if yes}

    async def _check_bulk(self, action: Action, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """One ``checkbulk`` per ``BULK_CHUNK`` of (note id, subject) pairs: whether each may."""
        allowed: list[bool] = []
        for start in range(0, len(pairs), BULK_CHUNK):
            chunk = pairs[start : start + BULK_CHUNK]
            body = {
                "consistency": self._consistency([note_id for note_id, _ in chunk]),
                "items": [
                    {
                        "resource": _object(NOTE, note_id),
                        "permission": action.value,
                        "subject": _subject(subject),
                    }
                    for note_id, subject in chunk
                ],
            }
            answer = await self._post("/v1/permissions/checkbulk", body)
            results = answer.get("pairs")
            if not isinstance(results, list) or len(results) != len(chunk):
                raise BackendUnavailable("checkbulk answered with the wrong number of pairs")
            allowed.extend(_pair_allows(result) for result in results)
        return allowed

    async def create(self, note_id: str, owner: str) -> None:
        await self._write_relationships(
            note_id, [_update("OPERATION_TOUCH", note_id, Relation.OWNER, owner)]
        )

    async def share(self, note_id: str, subject: str, role: Role) -> None:
        """TOUCH the role and DELETE the other shared role in one atomic write; an owner
        relationship is left alone (a shared role next to it grants nothing more)."""
        other = Relation.WRITER if role is Role.READER else Relation.READER
        await self._write_relationships(
            note_id,
            [
                _update("OPERATION_TOUCH", note_id, role.relation, subject),
                _update("OPERATION_DELETE", note_id, other, subject),
            ],
        )

    async def unshare(self, note_id: str, subject: str) -> None:
        for relation in (Relation.READER, Relation.WRITER):
            await self._delete_relationships(
                note_id,
                {
                    "resourceType": NOTE,
                    "optionalResourceId": escape_id(note_id),
                    "optionalRelation": relation.value,
                    "optionalSubjectFilter": {
                        "subjectType": USER,
                        "optionalSubjectId": escape_id(subject),
                    },
                },
            )

    async def delete(self, note_id: str) -> None:
        await self._delete_relationships(
            note_id, {"resourceType": NOTE, "optionalResourceId": escape_id(note_id)}
        )

    async def ping(self) -> None:
        await self._post("/v1/schema/read", {})

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The client that talks to SpiceDB (for tracing)."""
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _write_relationships(self, note_id: str, updates: list[dict[str, Any]]) -> None:
        answer = await self._post("/v1/relationships/write", {"updates": updates})
        self._remember_write(note_id, answer.get("writtenAt"))

    async def _delete_relationships(
        self, note_id: str, relationship_filter: dict[str, Any]
    ) -> None:
        answer = await self._post(
            "/v1/relationships/delete", {"relationshipFilter": relationship_filter}
        )
        self._remember_write(note_id, answer.get("deletedAt"))

    def _remember_write(self, note_id: str, token: Any) -> None:
        if isinstance(token, dict) and isinstance(token.get("token"), str):
            self._latest_token = token["token"]
            self._recent_writes[note_id] = True

    def _consistency(self, note_ids: Sequence[str]) -> dict[str, Any]:
        if self.fully_consistent:
            return {"fullyConsistent": True}
        if self._latest_token is not None and any(
            note_id in self._recent_writes for note_id in note_ids
        ):
            # Tokens only grow, so the latest covers every earlier write of this process.
            return {"atLeastAsFresh": {"token": self._latest_token}}
        return {"minimizeLatency": True}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.breaker.call(lambda: self._send(path, body))
        except CircuitOpenError as exc:
            raise BackendUnavailable("circuit open") from exc

    async def _send(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body)
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections
            raise BackendUnavailable(type(exc).__name__) from exc
        status = response.status_code
        if status >= 400:
            code, message = _error_of(response)
            if status in (401, 403):
                log.error("SpiceDB refused the pre-shared key", status=status, reason=message)
                raise BackendUnavailable(f"HTTP {status}")
            if status >= 500 or status == 429:
                raise BackendUnavailable(f"HTTP {status}")
            raise SpiceDBRequestError(status, code, message)
        try:
            answer = response.json()
        except ValueError:
            raise BackendUnavailable("the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise BackendUnavailable("the answer is not a JSON object")
        return answer


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, BackendUnavailable)


def _note_id(resource: Resource) -> str:
    if resource.type != NOTE or resource.id is None:
        raise ValueError(f"not a note: {resource}")
    return resource.id


def _object(object_type: str, object_id: str) -> dict[str, str]:
    return {"objectType": object_type, "objectId": escape_id(object_id)}


def _subject(subject: str) -> dict[str, Any]:
    return {"object": _object(USER, subject)}


def _update(operation: str, note_id: str, relation: Relation, subject: str) -> dict[str, Any]:
    return {
        "operation": operation,
        "relationship": {
            "resource": _object(NOTE, note_id),
            "relation": relation.value,
            "subject": _subject(subject),
        },
    }


def _permissionship(answer: dict[str, Any]) -> str:
    value = answer.get("permissionship")
    if value not in _PERMISSIONSHIPS:
        raise BackendUnavailable("the answer has no permissionship")
    return str(value)


def _pair_allows(pair: Any) -> bool:
    if not isinstance(pair, dict):
        raise BackendUnavailable("checkbulk answered with a malformed pair")
    item = pair.get("item")
    if isinstance(item, dict):
        return _permissionship(item) == HAS_PERMISSION
    error = pair.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if code in _TRANSIENT_CODES:
        raise BackendUnavailable(f"checkbulk item failed with code {code}")
    log.warning("SpiceDB could not evaluate a bulk check item; denied", code=code)
    return False


def _error_of(response: httpx.Response) -> tuple[int | None, str]:
    """The gRPC status code and message of an error answer (``{"code", "message"}``)."""
    try:
        document = response.json()
    except ValueError:
        return None, response.reason_phrase
    if not isinstance(document, dict):
        return None, response.reason_phrase
    code = document.get("code")
    message = document.get("message")
    return (
        code if isinstance(code, int) else None,
        message if isinstance(message, str) else response.reason_phrase,
    )
