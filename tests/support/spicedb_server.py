"""A local stand-in for SpiceDB speaking the parts of its HTTP (JSON) API the service uses.

Endpoints and shapes follow SpiceDB's v1 API as served by its HTTP gateway:
``/v1/permissions/check``, ``/v1/permissions/checkbulk``, ``/v1/relationships/write``,
``/v1/relationships/delete`` and ``/v1/schema/read``; errors are ``{"code", "message",
"details"}`` with gRPC codes and the gateway's HTTP statuses. The pre-shared key is checked as
SpiceDB does (missing → 401 code 16, wrong → 403 code 7). Object ids are validated with
SpiceDB's pattern.

Decisions are computed from ``deploy/spicedb/schema.zed`` itself — relations and union
permissions — so tests against this server also check that the shipped schema states the same
policy as the local backend.

Faults: ``mode = "error"`` answers 503 UNAVAILABLE, ``mode = "hang"`` holds every request
until it is stopped or ``hang_seconds`` pass; ``stop()`` refuses connections.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from support.jsonserver import Answer, JsonServer

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "deploy" / "spicedb" / "schema.zed"
PRESHARED_KEY = "test-preshared-key-0123456789"
OBJECT_ID = re.compile(r"^(([a-zA-Z0-9/_|\-=+]{1,})|\*)$")

# gRPC codes and the HTTP status grpc-gateway gives each.
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED = 3, 5, 6, 7
FAILED_PRECONDITION, UNAVAILABLE, UNAUTHENTICATED = 9, 14, 16
HTTP_STATUS = {3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 14: 503, 16: 401}

Relationship = tuple[str, str, str, str, str]  # resource type, id, relation, subject type, id


class SpiceDBError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


class Schema:
    """The subset of the schema language the shipped schema uses: definitions, relations with
    subject types, and permissions that are unions of relations or permissions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.relations: dict[str, dict[str, set[str]]] = {}
        self.permissions: dict[str, dict[str, list[str]]] = {}
        current: str | None = None
        for raw in text.splitlines():
            line = raw.split("//", 1)[0].strip()
            if not line:
                continue
            if match := re.fullmatch(r"definition (\w+) \{(\})?", line):
                current = None if match.group(2) else match.group(1)
                self.relations.setdefault(match.group(1), {})
                self.permissions.setdefault(match.group(1), {})
            elif line == "}":
                current = None
            elif current and (match := re.fullmatch(r"relation (\w+): ([\w| ]+)", line)):
                types = {part.strip() for part in match.group(2).split("|")}
                self.relations[current][match.group(1)] = types
            elif current and (match := re.fullmatch(r"permission (\w+) = ([\w+ ]+)", line)):
                members = [part.strip() for part in match.group(2).split("+")]
                self.permissions[current][match.group(1)] = members
            else:
                raise ValueError(f"schema line not understood by the stand-in: {raw!r}")


class SpiceDBServer(JsonServer):
    def __init__(self, *, preshared_key: str = PRESHARED_KEY, schema_path: Path = SCHEMA_PATH):
        super().__init__()
        self.preshared_key = preshared_key
        self.schema = Schema(schema_path.read_text(encoding="utf-8"))
        self.relationships: set[Relationship] = set()
        self.revision = 1
        self.mode = "ok"
        self.hang_seconds = 30.0
        self.requests: list[tuple[str, Any]] = []

    # --- Transport ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if self.mode == "hang":
            self.release.wait(self.hang_seconds)
        if self.mode == "error":
            return _error(UNAVAILABLE, "connection to the datastore failed")
        refused = self._refusal(headers.get("authorization", ""))
        if refused is not None:
            return refused
        routes = {
            "/v1/permissions/check": self._check,
            "/v1/permissions/checkbulk": self._check_bulk,
            "/v1/relationships/write": self._write,
            "/v1/relationships/delete": self._delete,
            "/v1/schema/read": self._read_schema,
        }
        if method != "POST" or path not in routes:
            return _error(NOT_FOUND, "Not Found")
        if not isinstance(body, dict):
            return _error(INVALID_ARGUMENT, "invalid request body")
        self.requests.append((path, body))
        try:
            return 200, routes[path](body)
        except SpiceDBError as exc:
            return _error(exc.code, exc.message)

    def _refusal(self, authorization: str) -> Answer | None:
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if not token:
            return _error(
                UNAUTHENTICATED, "invalid preshared key: Request unauthenticated with bearer"
            )
        if token != self.preshared_key:
            return _error(PERMISSION_DENIED, "invalid preshared key: invalid token")
        return None

    def calls(self, path: str) -> int:
        return sum(1 for called, _ in self.requests if called == path)

    def bodies(self, path: str) -> list[Any]:
        return [body for called, body in self.requests if called == path]

    # --- API ----------------------------------------------------------------------------------

    def _check(self, body: dict[str, Any]) -> dict[str, Any]:
        self._consistency(body)
        return {
            "checkedAt": self._token(),
            "permissionship": self._permissionship(body),
        }

    def _check_bulk(self, body: dict[str, Any]) -> dict[str, Any]:
        self._consistency(body)
        items = body.get("items")
        if not isinstance(items, list) or not items:
            raise SpiceDBError(INVALID_ARGUMENT, "items: value must contain at least 1 item")
        pairs = []
        for item in items:
            try:
                pairs.append(
                    {"request": item, "item": {"permissionship": self._permissionship(item)}}
                )
            except SpiceDBError as exc:
                pairs.append({"request": item, "error": {"code": exc.code, "message": exc.message}})
        return {"checkedAt": self._token(), "pairs": pairs}

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        updates = body.get("updates")
        if not isinstance(updates, list):
            raise SpiceDBError(INVALID_ARGUMENT, "updates: value is required")
        changed = set(self.relationships)
        for update in updates:
            relationship = self._relationship(update.get("relationship"))
            operation = update.get("operation")
            if operation == "OPERATION_CREATE":
                if relationship in changed:
                    raise SpiceDBError(ALREADY_EXISTS, "relationship already exists")
                changed.add(relationship)
            elif operation == "OPERATION_TOUCH":
                changed.add(relationship)
            elif operation == "OPERATION_DELETE":
                changed.discard(relationship)
            else:
                raise SpiceDBError(INVALID_ARGUMENT, f"invalid operation {operation!r}")
        self.relationships = changed
        self.revision += 1
        return {"writtenAt": self._token()}

    def _delete(self, body: dict[str, Any]) -> dict[str, Any]:
        flt = body.get("relationshipFilter")
        if not isinstance(flt, dict) or not flt.get("resourceType"):
            raise SpiceDBError(INVALID_ARGUMENT, "relationshipFilter: resource type is required")
        subject = flt.get("optionalSubjectFilter") or {}

        def matches(rel: Relationship) -> bool:
            resource_type, resource_id, relation, subject_type, subject_id = rel
            return (
                resource_type == flt["resourceType"]
                and flt.get("optionalResourceId") in (None, resource_id)
                and flt.get("optionalRelation") in (None, relation)
                and subject.get("subjectType") in (None, subject_type)
                and subject.get("optionalSubjectId") in (None, subject_id)
            )

        self.relationships = {rel for rel in self.relationships if not matches(rel)}
        self.revision += 1
        return {"deletedAt": self._token(), "deletionProgress": "DELETION_PROGRESS_COMPLETE"}

    def _read_schema(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"schemaText": self.schema.text, "readAt": self._token()}

    # --- Evaluation ---------------------------------------------------------------------------

    def allowed(
        self, resource_type: str, resource_id: str, name: str, subject: tuple[str, str]
    ) -> bool:
        if name in self.schema.relations.get(resource_type, {}):
            return (resource_type, resource_id, name, *subject) in self.relationships
        members = self.schema.permissions.get(resource_type, {}).get(name)
        if members is None:
            raise SpiceDBError(
                FAILED_PRECONDITION,
                f"relation/permission `{name}` not found under definition `{resource_type}`",
            )
        return any(self.allowed(resource_type, resource_id, member, subject) for member in members)

    def _permissionship(self, request: dict[str, Any]) -> str:
        resource = self._object(request.get("resource"))
        subject = self._object((request.get("subject") or {}).get("object"))
        permission = request.get("permission")
        if not isinstance(permission, str) or not permission:
            raise SpiceDBError(INVALID_ARGUMENT, "permission: value is required")
        allowed = self.allowed(*resource, permission, subject)
        return "PERMISSIONSHIP_HAS_PERMISSION" if allowed else "PERMISSIONSHIP_NO_PERMISSION"

    def _relationship(self, document: Any) -> Relationship:
        if not isinstance(document, dict):
            raise SpiceDBError(INVALID_ARGUMENT, "relationship: value is required")
        resource = self._object(document.get("resource"))
        subject = self._object((document.get("subject") or {}).get("object"))
        relation = document.get("relation")
        allowed_types = self.schema.relations[resource[0]].get(str(relation))
        if allowed_types is None:
            raise SpiceDBError(FAILED_PRECONDITION, f"relation `{relation}` not found")
        if subject[0] not in allowed_types:
            raise SpiceDBError(INVALID_ARGUMENT, f"subjects of type `{subject[0]}` not allowed")
        return (resource[0], resource[1], str(relation), subject[0], subject[1])

    def _object(self, document: Any) -> tuple[str, str]:
        if not isinstance(document, dict):
            raise SpiceDBError(INVALID_ARGUMENT, "object reference is required")
        object_type, object_id = document.get("objectType"), document.get("objectId")
        if object_type not in self.schema.relations:
            raise SpiceDBError(FAILED_PRECONDITION, f"object definition `{object_type}` not found")
        if not isinstance(object_id, str) or not OBJECT_ID.match(object_id):
            raise SpiceDBError(INVALID_ARGUMENT, f"invalid ObjectReference.ObjectId: {object_id!r}")
        return object_type, object_id

    def _consistency(self, body: dict[str, Any]) -> None:
        consistency = body.get("consistency")
        if consistency is None:
            return
        requirements = {"minimizeLatency", "atLeastAsFresh", "atExactSnapshot", "fullyConsistent"}
        if not isinstance(consistency, dict) or len(consistency.keys() & requirements) != 1:
            raise SpiceDBError(INVALID_ARGUMENT, "consistency: exactly one requirement")
        fresh = consistency.get("atLeastAsFresh")
        if fresh is not None and not (
            isinstance(fresh, dict)
            and str(fresh.get("token", "")).isdigit()
            and int(fresh["token"]) <= self.revision
        ):
            raise SpiceDBError(INVALID_ARGUMENT, "invalid revision requested")

    def _token(self) -> dict[str, str]:
        return {"token": str(self.revision)}


def _error(code: int, message: str) -> Answer:
    return HTTP_STATUS[code], {"code": code, "message": message, "details": []}
