"""Persisted documents: a request may name its document by hash instead of sending it.

Two mechanisms, one policy (``DocumentPolicy``), called by admission before anything parses:

- **Automatic persisted queries** (APQ), as Apollo Client's persisted-queries link speaks them:
  ``extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}``. A hash the service does
  not know is answered with ``PERSISTED_QUERY_NOT_FOUND`` (message ``PersistedQueryNotFound``,
  which is what the link, urql and Relay-style clients look for); the client then resends hash
  and document, the hash is verified and the document registered. Registered documents live in a
  store bounded in bytes of memory (in process), or in Redis shared by the replicas.
- **Trusted documents**: a manifest (hash → document, as GraphQL Code Generator's client preset
  or the Relay compiler write it) loaded at start-up, every entry's hash verified. A request may
  name a manifest entry by ``extensions.persistedQuery.sha256Hash``, ``documentId`` or
  ``doc_id``. With ``only_trusted`` every other document is refused (``DOCUMENT_NOT_TRUSTED``)
  before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pcf_api.errors import AppError, ErrorCode
from pcf_api.resilience import CircuitBreaker, CircuitOpenError
from pcf_api.sizing import BytesCache, text_bytes

log = structlog.stdlib.get_logger(__name__)

APQ_VERSION = 1
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_SUPPORTED_MESSAGE = "PersistedQueryNotSupported"
REDIS_PREFIX = "pcf:pq:"
REDIS_TTL_SECONDS = 7 * 24 * 3600
REDIS_TIMEOUT_SECONDS = 0.25
_OUTAGE_LOG_SECONDS = 30.0

_HEX = re.compile(r"[0-9a-f]+")
_ALGORITHMS = {32: "md5", 40: "sha1", 64: "sha256"}
_SHA256_HEX = 64
_NO_STORE = {"Cache-Control": "no-store"}
_OUTAGES = (RedisError, OSError, TimeoutError, CircuitOpenError)


def sha256_hex(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def registered_bytes(sha256: str, document: str) -> int:
    """A registered document's memory: its hash and its text (a non-ASCII text with its UTF-8
    copy)."""
    return text_bytes(sha256) + text_bytes(document)


class ManifestError(ValueError):
    """The trusted-documents manifest cannot be used; the message says which entry and why."""


class DocumentStore(Protocol):
    """Where registered (APQ) documents live, by their SHA-256."""

    async def get(self, sha256: str) -> str | None: ...

    async def put(self, sha256: str, document: str) -> None: ...

    @property
    def size_bytes(self) -> int: ...


class MemoryDocumentStore:
    """In process, least recently used first out, bounded in bytes of memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cache: BytesCache[str, str] = BytesCache(
            max_bytes=max_bytes, size_of=registered_bytes
        )

    def lookup(self, sha256: str) -> str | None:
        return self._cache.get(sha256)

    def store(self, sha256: str, document: str) -> None:
        self._cache.put(sha256, document)  # not stored when the store is off or it is too large

    async def get(self, sha256: str) -> str | None:
        return self.lookup(sha256)

    async def put(self, sha256: str, document: str) -> None:
        self.store(sha256, document)

    @property
    def size_bytes(self) -> int:
        return self._cache.size_bytes

    def __len__(self) -> int:
        return len(self._cache)


class RedisDocumentStore:
    """Registered documents in Redis (keys ``prefix + sha256``, with a TTL), shared by every
    replica, with an in-process store in front (a document never changes under its hash).

    Redis being away never fails a request: a registration is dropped, a lookup is a miss (the
    client then resends the document, which executes). Each call waits at most the client's
    timeout, and after ``BREAKER_FAILURES`` failures in a row the breaker skips Redis for
    ``BREAKER_RESET_SECONDS``, so an outage costs requests nothing."""

    BREAKER_FAILURES = 3
    BREAKER_RESET_SECONDS = 5.0

    def __init__(
        self,
        redis: Redis,
        *,
        local: MemoryDocumentStore,
        prefix: str = REDIS_PREFIX,
        ttl_seconds: int = REDIS_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.local = local
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.errors = 0
        self.breaker = CircuitBreaker(
            "persisted_queries_redis",
            failure_threshold=self.BREAKER_FAILURES,
            reset_timeout=self.BREAKER_RESET_SECONDS,
        )
        self._logged_at = float("-inf")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        local: MemoryDocumentStore,
        prefix: str = REDIS_PREFIX,
        timeout: float = REDIS_TIMEOUT_SECONDS,
    ) -> RedisDocumentStore:
        client = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        return cls(client, local=local, prefix=prefix)

    def _failed(self, operation: str, error: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_at >= _OUTAGE_LOG_SECONDS:
            self._logged_at = now
            log.warning(
                "persisted query store unavailable",
                operation=operation,
                reason=type(error).__name__,
            )

    async def get(self, sha256: str) -> str | None:
        document = self.local.lookup(sha256)
        if document is not None:
            return document
        try:
            stored = await self.breaker.call(lambda: self.redis.get(self.prefix + sha256))
        except _OUTAGES as error:  # an outage: a miss, so the client resends the document
            self._failed("get", error)
            return None
        if stored is None:
            return None
        document = stored.decode() if isinstance(stored, bytes) else str(stored)
        self.local.store(sha256, document)
        return document

    async def put(self, sha256: str, document: str) -> None:
        self.local.store(sha256, document)
        try:
            await self.breaker.call(
                lambda: self.redis.set(self.prefix + sha256, document, ex=self.ttl_seconds)
            )
        except _OUTAGES as error:  # the document executes all the same
            self._failed("set", error)

    @property
    def size_bytes(self) -> int:
        return self.local.size_bytes

    async def check(self) -> None:
        """Health: Redis answers a PING."""
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()


def load_manifest(path: Path) -> dict[str, str]:
    """The trusted documents of a manifest file, by id; ManifestError when unusable.

    Accepted: ``{"<id>": "<document>", …}`` (GraphQL Code Generator's client preset
    ``persisted-documents.json``, the Relay compiler's ``persistConfig`` file) and Apollo's
    ``{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body"}]}``.
    Every id must be the hex MD5, SHA-1 or SHA-256 of its document (optionally prefixed
    ``sha256:`` etc.), and is checked."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ManifestError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    return parse_manifest(raw, source=str(path))


def parse_manifest(raw: Any, *, source: str = "manifest") -> dict[str, str]:
    entries: list[tuple[Any, Any]]
    if isinstance(raw, dict) and raw.get("format") == "apollo-persisted-query-manifest":
        operations = raw.get("operations")
        if not isinstance(operations, list):
            raise ManifestError(f"{source}: 'operations' must be a list")
        entries = [
            (item.get("id"), item.get("body")) if isinstance(item, dict) else (None, None)
            for item in operations
        ]
    elif isinstance(raw, dict):
        entries = list(raw.items())
    else:
        raise ManifestError(f"{source}: must be a JSON object of id → document")
    documents: dict[str, str] = {}
    for index, (key, document) in enumerate(entries):
        where = f"{source}: entry {key!r}" if isinstance(key, str) else f"{source}: entry {index}"
        if not isinstance(key, str) or not isinstance(document, str) or not document.strip():
            raise ManifestError(f"{where}: needs a string id and a non-empty document")
        algorithm, digest = _split_id(key)
        expected = _ALGORITHMS.get(len(digest))
        if expected is None or not _HEX.fullmatch(digest) or algorithm not in (None, expected):
            raise ManifestError(
                f"{where}: the id is not a hex MD5, SHA-1 or SHA-256 (optionally 'sha256:…')"
            )
        actual = hashlib.new(expected, document.encode()).hexdigest()
        if actual != digest:
            raise ManifestError(f"{where}: the id is not the {expected} of its document")
        documents[digest] = document
    return documents


def _split_id(key: str) -> tuple[str | None, str]:
    algorithm, colon, digest = key.lower().partition(":")
    return (algorithm, digest) if colon else (None, algorithm)


class DocumentPolicy:
    """Turns a request's ``query``, ``extensions`` and document id into the document text to
    parse, or raises AppError. Counts what it does for the metrics."""

    def __init__(
        self,
        *,
        store: DocumentStore | None,
        trusted: Mapping[str, str] | None = None,
        only_trusted: bool = False,
        max_document_bytes: int | None = None,
    ) -> None:
        self.store = store  # None: automatic persisted queries are off
        self.trusted = dict(trusted or {})
        self._trusted_texts = frozenset(self.trusted.values())
        self.only_trusted = only_trusted
        self.max_document_bytes = max_document_bytes
        self.hits = 0
        self.misses = 0
        self.registrations = 0
        self.trusted_hits = 0
        self.refusals = 0

    async def aclose(self) -> None:
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()

    def is_trusted(self, document: str) -> bool:
        return document in self._trusted_texts

    def check_text(self, document: str) -> None:
        """A document sent as text (HTTP without a hash, or a WebSocket operation): refused
        unless it is in the manifest, when only trusted documents may run."""
        if self.only_trusted:
            if document not in self._trusted_texts:
                self.refuse()
            self.trusted_hits += 1

    def refuse(self) -> None:
        self.refusals += 1
        raise AppError(
            ErrorCode.DOCUMENT_NOT_TRUSTED,
            "Only the documents in this service's trusted-documents manifest are accepted.",
        )

    async def document(
        self, query: str, extensions: Mapping[str, Any] | None, document_id: str | None = None
    ) -> str:
        persisted = extensions.get("persistedQuery") if extensions is not None else None
        if persisted is None and document_id is None:
            if self.only_trusted:
                self.check_text(query)
            return query
        if document_id is not None:
            return self._by_id(query, document_id)
        return await self._persisted(query, persisted)

    def _by_id(self, query: str, document_id: str) -> str:
        """Relay's ``doc_id`` / GraphQL over HTTP's ``documentId``: a manifest entry."""
        trusted = self.trusted.get(_split_id(document_id)[1])
        if trusted is not None:
            if query and query != trusted:
                raise AppError(
                    ErrorCode.INVALID_INPUT,
                    "The document is not the one its documentId names.",
                    extensions={"field": "documentId"},
                )
            self.trusted_hits += 1
            return trusted
        if self.only_trusted:
            self.refuse()
        if query:
            return query  # an id this service does not know, with the document itself
        self.misses += 1
        raise AppError(
            ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            "No trusted document has this id.",
            extensions={"field": "documentId"},
            headers=_NO_STORE,
        )

    async def _persisted(self, query: str, persisted: Any) -> str:
        if not isinstance(persisted, dict):
            raise AppError(
                ErrorCode.INVALID_INPUT,
                "extensions.persistedQuery must be an object.",
                extensions={"field": "extensions.persistedQuery"},
            )
        if persisted.get("version") != APQ_VERSION:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                "Only version 1 of persisted queries is supported.",
                extensions={"field": "extensions.persistedQuery.version"},
            )
        sha = persisted.get("sha256Hash")
        if not isinstance(sha, str) or len(sha) != _SHA256_HEX or not _HEX.fullmatch(sha.lower()):
            raise AppError(
                ErrorCode.INVALID_INPUT,
                "extensions.persistedQuery.sha256Hash must be a hex SHA-256.",
                extensions={"field": "extensions.persistedQuery.sha256Hash"},
            )
        sha = sha.lower()
        if query:
            if sha256_hex(query) != sha:
                raise AppError(
                    ErrorCode.INVALID_INPUT,
                    "The persisted query's sha256Hash is not the SHA-256 of its document.",
                    extensions={"field": "extensions.persistedQuery.sha256Hash"},
                )
            if query in self._trusted_texts:
                self.trusted_hits += 1
                return query
            if self.only_trusted:
                self.refuse()
            if self.store is not None and (
                self.max_document_bytes is None or len(query) <= self.max_document_bytes
            ):
                await self.store.put(sha, query)
                self.registrations += 1
            return query
        trusted = self.trusted.get(sha)
        if trusted is not None:
            self.trusted_hits += 1
            return trusted
        if self.only_trusted:
            self.refuse()
        if self.store is None:
            raise AppError(
                ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
                NOT_SUPPORTED_MESSAGE,
                extensions={"field": "extensions.persistedQuery"},
            )
        document = await self.store.get(sha)
        if document is None:
            self.misses += 1
            raise AppError(
                ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE, headers=_NO_STORE
            )
        self.hits += 1
        return document
