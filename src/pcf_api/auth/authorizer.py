"""``is_authorized``'s core: cached decisions over a backend, and what happens when it is away.

Decisions are cached per (subject, resource, action) for ``ttl`` seconds (5 minutes; fixed in
production), in an LRU bounded in count and in bytes (a subject is what a token says), and
dropped for a resource as soon as its relationships change through this process (create, share,
unshare, delete).

Outage rule. When the backend cannot be asked, decisions come from the cache — including stale
ones — while the outage is younger than ``stale_window`` (5 minutes). To make that possible an
entry is kept for ``ttl + stale_window`` seconds after it was decided: it is *fresh* for the
first ``ttl`` seconds and *stale* afterwards, and a stale entry is only ever used during an
outage. Once the outage is older than the window, or when nothing is cached, decisions fail
closed with AuthorizationUnavailable (SERVICE_UNAVAILABLE, 503). So no decision older than
``ttl + stale_window`` is ever served, and none at all once the backend has been away for longer
than the window.

The cache is per process: a change made through another replica reaches this one when its
entries expire (at most ``ttl`` later) unless ``invalidate`` is called from a shared event.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import httpx

from pcf_api.auth.policy import (
    NOTE,
    Action,
    AuthorizationBackend,
    BackendUnavailable,
    Resource,
    Role,
)
from pcf_api.errors import AppError, ErrorCode
from pcf_api.resilience import Availability
from pcf_api.sizing import BytesCache, text_bytes

DEFAULT_TTL_SECONDS = 300.0
DEFAULT_STALE_WINDOW_SECONDS = 300.0
DEFAULT_CACHE_BYTES = 32 * 1_048_576
INDEX_ENTRY_BYTES = 320
"""The invalidation index's cost per entry at most: a set of its own for the resource and the
dictionary slot that holds it."""


class AuthzHealth(StrEnum):
    """The values of ``pcf_api.health.Status`` this component can be in."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthChecks(Protocol):
    """What ``register_health_checks`` needs of ``pcf_api.health.HealthRegistry`` (which sits
    above this package, so it is not imported)."""

    def register(
        self, name: str, check: Callable[[], Awaitable[None]], *, critical: bool
    ) -> None: ...


class AuthorizationUnavailable(AppError):
    """No trustworthy decision can be made: the backend is away and the cache cannot answer."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Authorization is temporarily unavailable.",
            headers={"Retry-After": "5"},
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer and where it came from, for the resolver and the audit line."""

    subject: str
    resource: Resource
    action: Action
    allowed: bool
    backend: str
    from_cache: bool
    stale: bool = False

    def log_fields(self) -> dict[str, Any]:
        """The audit line's fields: who, what, the answer and its origin; no token content."""
        return {
            "subject": self.subject,
            "resource": str(self.resource),
            "action": self.action.value,
            "decision": "allow" if self.allowed else "deny",
            "backend": self.backend,
            "from_cache": self.from_cache,
            "stale": self.stale,
        }


CacheKey = tuple[str, Resource, Action]
_MIN_REINDEX = 16


class CachedDecision(NamedTuple):
    allowed: bool
    fresh: bool


class _Entry(NamedTuple):
    allowed: bool
    decided_at: float


def decision_bytes(key: CacheKey, entry: _Entry) -> int:
    """A cached decision's memory, its place in the invalidation index included. The key counts
    twice: the index may still hold as many evicted keys as the cache holds live ones."""
    subject, resource, _ = key
    key_bytes = sys.getsizeof(key) + text_bytes(subject) + sys.getsizeof(resource)
    if resource.id is not None:
        key_bytes += text_bytes(resource.id)
    entry_bytes = sys.getsizeof(entry) + sys.getsizeof(entry.decided_at)
    return 2 * key_bytes + entry_bytes + INDEX_ENTRY_BYTES


class DecisionCache:
    """Bounded TTL cache of decisions that also keeps stale entries for the outage window and
    can drop every decision about one resource.

    A ``BytesCache`` (expiry ``ttl + stale_window``, LRU beyond ``maxsize`` entries or
    ``max_bytes``) holds the entries; a side index from resource to its keys makes invalidation
    cheap. Keys the cache has already evicted may linger in the index; it is rebuilt from the
    cache once it holds twice as many keys as the cache does, so it stays bounded too.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        maxsize: int = 100_000,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        stale_window: float = DEFAULT_STALE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: BytesCache[CacheKey, _Entry] = BytesCache(
            max_bytes=max_bytes,
            max_entries=maxsize,
            ttl=ttl + stale_window,
            timer=clock,
            size_of=decision_bytes,
        )
        self.enabled = ttl > 0 and self._entries.enabled
        self._by_resource: dict[Resource, set[CacheKey]] = {}
        self._indexed = 0
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The estimated memory of the cached decisions."""
        return self._entries.size_bytes

    @property
    def epoch(self) -> int:
        """Changes on every invalidation; ``put`` ignores answers fetched before one."""
        return self._epoch

    def get(self, key: CacheKey) -> CachedDecision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return CachedDecision(entry.allowed, self._clock() - entry.decided_at < self.ttl)

    def put(self, key: CacheKey, allowed: bool, *, epoch: int | None = None) -> None:
        """Remember a decision; skipped when an invalidation happened since ``epoch`` (the
        answer may predate the change that caused it)."""
        if not self.enabled or (epoch is not None and epoch != self._epoch):
            return
        if not self._entries.put(key, _Entry(allowed, self._clock())):
            return
        keys = self._by_resource.setdefault(key[1], set())
        if key not in keys:
            keys.add(key)
            self._indexed += 1
            if self._indexed > max(2 * len(self._entries), _MIN_REINDEX):
                self._reindex()

    def invalidate(self, resource: Resource) -> int:
        """Drop every decision about ``resource``; returns how many were cached."""
        self._epoch += 1
        keys = self._by_resource.pop(resource, set())
        self._indexed -= len(keys)
        return sum(self._entries.pop(key) is not None for key in keys)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_resource.clear()
        self._indexed = 0

    def _reindex(self) -> None:
        index: dict[Resource, set[CacheKey]] = {}
        keys = self._entries.keys()
        for key in keys:
            index.setdefault(key[1], set()).add(key)
        self._by_resource = index
        self._indexed = len(keys)


@dataclass(slots=True)
class _Flight:
    """One bulk lookup under way: the cache epoch it began in, and the subjects it allows."""

    epoch: int
    answer: asyncio.Future[set[str]]
    task: asyncio.Task[None] | None = None


class Authorizer:
    """Decisions with caching and the outage rule; relationship writes that invalidate."""

    def __init__(
        self,
        backend: AuthorizationBackend,
        *,
        cache: DecisionCache | None = None,
        stale_window: float = DEFAULT_STALE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else DecisionCache(clock=clock)
        self.stale_window = stale_window
        self.availability = Availability("authorization", clock=clock)
        self.cache_hits = 0
        """Decisions answered from a fresh cache entry (for the metrics)."""
        self.cache_misses = 0
        """Decisions the backend was asked for."""
        self._flights: dict[CacheKey, _Flight] = {}
        """``audience`` lookups under way, by each (subject, note, action) they will answer."""

    @property
    def failing_closed(self) -> bool:
        """The backend has been away longer than the window: nothing is decided."""
        return not self.availability.is_up and self.availability.down_for() >= self.stale_window

    async def check(self, subject: str, resource: Resource, action: Action) -> Decision:
        """Decide; raises AuthorizationUnavailable when no trustworthy answer exists."""
        if resource.id is None:
            return self._collection_decision(subject, resource, action)
        key = (subject, resource, action)
        cached = self.cache.get(key)
        if cached is not None and cached.fresh and not self.failing_closed:
            self.cache_hits += 1
            return self._decision(key, cached.allowed, from_cache=True)
        self.cache_misses += 1
        epoch = self.cache.epoch
        try:
            allowed = await self.backend.check(subject, resource, action)
        except BackendUnavailable as exc:
            self.availability.mark_down(str(exc) or type(exc).__name__)
            if cached is None or self.failing_closed:
                raise AuthorizationUnavailable from None
            return self._decision(key, cached.allowed, from_cache=True, stale=not cached.fresh)
        self.availability.mark_up()
        self.cache.put(key, allowed, epoch=epoch)
        return self._decision(key, allowed, from_cache=False)

    async def filter(
        self, subject: str, resources: Sequence[Resource], action: Action = Action.READ
    ) -> list[Decision]:
        """One decision per distinct resource, in order; what is not cached is asked in bulk.

        During an outage every resource needs a cached decision, or the whole call fails closed
        (leaving out undecided notes would silently show an incomplete list).
        """
        unique = list(dict.fromkeys(resources))
        if any(resource.id is None for resource in unique):
            raise ValueError("filter takes individual resources, not a collection")
        failing_closed = self.failing_closed
        cached = {resource: self.cache.get((subject, resource, action)) for resource in unique}
        missing = [
            resource
            for resource, entry in cached.items()
            if entry is None or not entry.fresh or failing_closed
        ]
        self.cache_hits += len(unique) - len(missing)
        self.cache_misses += len(missing)
        answers: dict[Resource, Decision] = {
            resource: self._decision((subject, resource, action), entry.allowed, from_cache=True)
            for resource, entry in cached.items()
            if entry is not None and resource not in missing
        }
        if missing:
            epoch = self.cache.epoch
            try:
                allowed = await self.backend.filter(subject, action, missing)
            except BackendUnavailable as exc:
                self.availability.mark_down(str(exc) or type(exc).__name__)
                return self._stale_filter(subject, action, unique, cached, answers)
            self.availability.mark_up()
            for resource in missing:
                key = (subject, resource, action)
                self.cache.put(key, resource in allowed, epoch=epoch)
                answers[resource] = self._decision(key, resource in allowed, from_cache=False)
        return [answers[resource] for resource in unique]

    async def audience(
        self,
        resource: Resource,
        subjects: Collection[str],
        action: Action = Action.READ,
        *,
        budget: AbstractAsyncContextManager[Any] | None = None,
    ) -> list[Decision]:
        """One decision per distinct subject about one note: who among a note's subscribers
        may receive a change to it.

        Cached decisions are free; the rest are asked of the backend in one bulk call, and a
        caller asking about a (subject, note) while such a call runs waits for its answer
        instead of asking again (single-flight). ``budget`` (e.g. a semaphore) is held around
        the backend call only. The outage rule is ``filter``'s: a subject with nothing cached
        fails the whole call closed.
        """
        unique = list(dict.fromkeys(subjects))
        failing_closed = self.failing_closed
        epoch = self.cache.epoch
        cached: dict[str, CachedDecision | None] = {}
        answers: dict[str, Decision] = {}
        waiting: dict[str, _Flight] = {}
        missing: list[str] = []
        for subject in unique:
            key = (subject, resource, action)
            entry = cached[subject] = self.cache.get(key)
            flight = self._flights.get(key)
            if entry is not None and entry.fresh and not failing_closed:
                answers[subject] = self._decision(key, entry.allowed, from_cache=True)
            elif flight is not None and flight.epoch == epoch:
                waiting[subject] = flight
            else:
                missing.append(subject)
        self.cache_hits += len(answers)
        self.cache_misses += len(missing)
        if missing:
            waiting.update(dict.fromkeys(missing, self._fly(resource, action, missing, budget)))
        unanswered: list[str] = []
        for subject, flight in waiting.items():
            try:
                allowed = await asyncio.shield(flight.answer)
            except BackendUnavailable:
                unanswered.append(subject)
                continue
            key = (subject, resource, action)
            answers[subject] = self._decision(key, subject in allowed, from_cache=False)
        for subject in unanswered:
            entry = cached[subject]
            if entry is None or self.failing_closed:
                raise AuthorizationUnavailable
            answers[subject] = self._decision(
                (subject, resource, action), entry.allowed, from_cache=True, stale=True
            )
        return [answers[subject] for subject in unique]

    def _fly(
        self,
        resource: Resource,
        action: Action,
        subjects: list[str],
        budget: AbstractAsyncContextManager[Any] | None,
    ) -> _Flight:
        """Start one bulk lookup for ``subjects``, answering whoever asks meanwhile."""
        flight = _Flight(self.cache.epoch, asyncio.get_running_loop().create_future())
        keys = [(subject, resource, action) for subject in subjects]
        for key in keys:
            self._flights[key] = flight

        async def ask() -> None:
            try:
                async with budget if budget is not None else nullcontext():
                    allowed = await self.backend.audience(resource, action, subjects)
            except BackendUnavailable as exc:
                self.availability.mark_down(str(exc) or type(exc).__name__)
                flight.answer.set_exception(exc)
            except BaseException as exc:
                flight.answer.set_exception(BackendUnavailable(type(exc).__name__))
                raise
            else:
                self.availability.mark_up()
                for key in keys:
                    self.cache.put(key, key[0] in allowed, epoch=flight.epoch)
                flight.answer.set_result(allowed)
            finally:
                for key in keys:
                    if self._flights.get(key) is flight:
                        del self._flights[key]

        # Retrieved even when every waiter left, so asyncio does not report it as lost.
        flight.answer.add_done_callback(lambda answer: answer.exception())
        flight.task = asyncio.create_task(ask(), name="authorization audience")
        return flight

    async def create(self, note_id: str, owner: str) -> None:
        """Record the owner of a new note (before the note is visible, ideally)."""
        await self._write(Resource.note(note_id), self.backend.create(note_id, owner))

    async def share(self, note_id: str, subject: str, role: Role) -> None:
        await self._write(Resource.note(note_id), self.backend.share(note_id, subject, role))

    async def unshare(self, note_id: str, subject: str) -> None:
        await self._write(Resource.note(note_id), self.backend.unshare(note_id, subject))

    async def delete(self, note_id: str) -> None:
        await self._write(Resource.note(note_id), self.backend.delete(note_id))

    def invalidate(self, resource: Resource) -> int:
        """Forget decisions about ``resource`` (e.g. on a change announced by another replica)."""
        return self.cache.invalidate(resource)

    def health_status(self) -> AuthzHealth:
        """healthy: the backend answers; degraded: it does not and decisions come from the
        cache; unhealthy: it has been away longer than the window and decisions fail closed."""
        if self.availability.is_up:
            return AuthzHealth.HEALTHY
        return AuthzHealth.UNHEALTHY if self.failing_closed else AuthzHealth.DEGRADED

    async def ping_backend(self) -> None:
        """Health check: the backend answers. Down here alone means degraded."""
        try:
            await self.backend.ping()
        except BackendUnavailable as exc:
            self.availability.mark_down(str(exc) or type(exc).__name__)
            raise
        self.availability.mark_up()

    async def check_deciding(self) -> None:
        """Health check: decisions are being made (from the backend or, for now, the cache)."""
        if self.failing_closed:
            raise AuthorizationUnavailable

    def register_health_checks(self, registry: HealthChecks) -> None:
        """``authorization`` (non-critical: down → degraded) pings the backend;
        ``authorization_decisions`` (critical: down → unhealthy) fails once decisions fail
        closed. Together they give the readiness document the three states above."""
        registry.register("authorization", self.ping_backend, critical=False)
        registry.register("authorization_decisions", self.check_deciding, critical=True)

    @property
    def backend_http_client(self) -> httpx.AsyncClient | None:
        """The backend's HTTP client, when it talks HTTP (SpiceDB), for tracing."""
        client = getattr(self.backend, "http_client", None)
        return client if isinstance(client, httpx.AsyncClient) else None

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def _write(self, resource: Resource, operation: Awaitable[None]) -> None:
        try:
            await operation
        except BackendUnavailable as exc:
            self.availability.mark_down(str(exc) or type(exc).__name__)
            raise AuthorizationUnavailable from None
        finally:
            # Even a failed write may have been applied (a timeout after the commit).
            self.cache.invalidate(resource)
        self.availability.mark_up()

    def _collection_decision(self, subject: str, resource: Resource, action: Action) -> Decision:
        if resource.type != NOTE:
            raise ValueError(f"unknown resource type {resource.type!r}")
        return Decision(subject, resource, action, action is Action.CREATE, "policy", False)

    def _decision(
        self, key: CacheKey, allowed: bool, *, from_cache: bool, stale: bool = False
    ) -> Decision:
        subject, resource, action = key
        return Decision(subject, resource, action, allowed, self.backend.name, from_cache, stale)

    def _stale_filter(
        self,
        subject: str,
        action: Action,
        unique: list[Resource],
        cached: dict[Resource, CachedDecision | None],
        answers: dict[Resource, Decision],
    ) -> list[Decision]:
        if self.failing_closed:
            raise AuthorizationUnavailable
        for resource in unique:
            entry = cached[resource]
            if entry is None:
                raise AuthorizationUnavailable
            if resource not in answers:
                answers[resource] = self._decision(
                    (subject, resource, action), entry.allowed, from_cache=True, stale=True
                )
        return [answers[resource] for resource in unique]
