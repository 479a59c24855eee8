"""is_authorized's core (spec: auth/authorizer.py): cached decisions, the outage rule, health.

While the backend is away for less than the stale window, cached decisions — stale ones too —
keep being served; with nothing cached, or once the window has passed, decisions fail closed
with SERVICE_UNAVAILABLE. Relationship changes drop the resource's cached decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pcf_api.auth.authorizer import (
    AuthorizationUnavailable,
    Authorizer,
    AuthzHealth,
    Decision,
    DecisionCache,
)
from pcf_api.auth.policy import (
    GRANTS,
    Action,
    BackendUnavailable,
    Relation,
    Resource,
    Role,
)
from pcf_api.errors import ErrorCode
from pcf_api.health import HealthRegistry, Status
from support.logs import capture_logs

pytestmark = pytest.mark.anyio

NOTE = Resource.note("n1")
OTHER = Resource.note("n2")
TTL, WINDOW = 300.0, 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryBackend:
    """The policy over a dict; counts calls; ``down`` makes every call unavailable."""

    name = "memory"

    def __init__(self) -> None:
        self.relations: dict[tuple[str, str], Relation] = {}
        self.calls: list[str] = []
        self.down = False
        self.gate = asyncio.Event()
        """``audience`` answers once this is set (set from the start): lets a test hold it."""
        self.gate.set()

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise BackendUnavailable("connection refused")

    def _allows(self, subject: str, resource: Resource, action: Action) -> bool:
        relation = self.relations.get((str(resource.id), subject))
        return relation is not None and action in GRANTS[relation]

    async def check(self, subject: str, resource: Resource, action: Action) -> bool:
        self._enter("check")
        return self._allows(subject, resource, action)

    async def filter(
        self, subject: str, action: Action, resources: Sequence[Resource]
    ) -> set[Resource]:
        self._enter(f"filter:{len(resources)}")
        return {resource for resource in resources if self._allows(subject, resource, action)}

    async def audience(
        self, resource: Resource, action: Action, subjects: Sequence[str]
    ) -> set[str]:
        self._enter(f"audience:{len(subjects)}")
        await self.gate.wait()
        if self.down:
            raise BackendUnavailable("connection lost")
        return {subject for subject in subjects if self._allows(subject, resource, action)}

    async def create(self, note_id: str, owner: str) -> None:
        self._enter("create")
        self.relations[(note_id, owner)] = Relation.OWNER

    async def share(self, note_id: str, subject: str, role: Role) -> None:
        self._enter("share")
        self.relations[(note_id, subject)] = role.relation

    async def unshare(self, note_id: str, subject: str) -> None:
        self._enter("unshare")
        self.relations.pop((note_id, subject), None)

    async def delete(self, note_id: str) -> None:
        self._enter("delete")
        for key in [key for key in self.relations if key[0] == note_id]:
            del self.relations[key]

    async def ping(self) -> None:
        self._enter("ping")

    async def aclose(self) -> None:
        self.calls.append("aclose")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend() -> MemoryBackend:
    backend = MemoryBackend()
    backend.relations[("n1", "alice")] = Relation.OWNER
    backend.relations[("n1", "bob")] = Relation.READER
    return backend


@pytest.fixture
def authorizer(backend: MemoryBackend, clock: Clock) -> Authorizer:
    cache = DecisionCache(ttl=TTL, maxsize=1000, stale_window=WINDOW, clock=clock)
    return Authorizer(backend, cache=cache, stale_window=WINDOW, clock=clock)


async def test_a_decision_comes_from_the_backend_and_says_so(authorizer: Authorizer) -> None:
    decision = await authorizer.check("alice", NOTE, Action.DELETE)

    assert decision == Decision("alice", NOTE, Action.DELETE, True, "memory", from_cache=False)
    assert decision.log_fields() == {
        "subject": "alice",
        "resource": "note:n1",
        "action": "delete",
        "decision": "allow",
        "backend": "memory",
        "from_cache": False,
        "stale": False,
    }


async def test_a_second_identical_check_within_the_ttl_does_not_reach_the_backend(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.check("bob", NOTE, Action.UPDATE)
    clock.now += TTL - 1

    decision = await authorizer.check("bob", NOTE, Action.UPDATE)

    assert backend.calls == ["check"]
    assert decision.from_cache
    assert not decision.allowed
    assert decision.log_fields()["decision"] == "deny"


async def test_after_the_ttl_the_backend_is_asked_again(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    clock.now += TTL

    decision = await authorizer.check("bob", NOTE, Action.READ)

    assert backend.calls == ["check", "check"]
    assert not decision.from_cache


async def test_anyone_may_create_a_note_and_nothing_else_is_decided_on_the_collection(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    create = await authorizer.check("stranger", Resource("note"), Action.CREATE)
    read = await authorizer.check("stranger", Resource("note"), Action.READ)

    assert create.allowed
    assert create.backend == "policy"
    assert not read.allowed
    assert backend.calls == []
    with pytest.raises(ValueError, match="unknown resource type"):
        await authorizer.check("stranger", Resource("user"), Action.CREATE)


# --- Relationship changes invalidate ----------------------------------------------------------


async def test_unsharing_drops_the_cached_decision_at_once(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    assert (await authorizer.check("bob", NOTE, Action.READ)).allowed

    await authorizer.unshare("n1", "bob")

    decision = await authorizer.check("bob", NOTE, Action.READ)
    assert not decision.allowed
    assert not decision.from_cache


async def test_sharing_creating_and_deleting_invalidate_too(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    assert not (await authorizer.check("carol", NOTE, Action.UPDATE)).allowed
    await authorizer.share("n1", "carol", Role.WRITER)
    assert (await authorizer.check("carol", NOTE, Action.UPDATE)).allowed

    assert (await authorizer.check("alice", NOTE, Action.READ)).allowed
    await authorizer.delete("n1")
    assert not (await authorizer.check("alice", NOTE, Action.READ)).allowed

    assert not (await authorizer.check("dave", OTHER, Action.READ)).allowed
    await authorizer.create("n2", "dave")
    assert (await authorizer.check("dave", OTHER, Action.READ)).allowed


async def test_invalidate_forgets_a_resource_changed_elsewhere(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    backend.relations.pop(("n1", "bob"))  # e.g. through another replica

    assert (await authorizer.check("bob", NOTE, Action.READ)).allowed  # still cached
    assert authorizer.invalidate(NOTE) == 1
    assert not (await authorizer.check("bob", NOTE, Action.READ)).allowed


# --- Lists ------------------------------------------------------------------------------------


async def test_a_list_is_filtered_in_one_backend_call_for_what_is_not_cached(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    notes = [NOTE, OTHER, Resource.note("n3"), OTHER]

    decisions = await authorizer.filter("bob", notes)

    assert [(d.resource, d.allowed, d.from_cache) for d in decisions] == [
        (NOTE, True, True),
        (OTHER, False, False),
        (Resource.note("n3"), False, False),
    ]
    assert backend.calls == ["check", "filter:2"]
    assert all(d.from_cache for d in await authorizer.filter("bob", notes))
    assert backend.calls == ["check", "filter:2"]


async def test_a_fully_cached_list_does_not_reach_the_backend(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    await authorizer.filter("alice", [NOTE, OTHER], Action.UPDATE)
    backend.calls.clear()

    decisions = await authorizer.filter("alice", [OTHER, NOTE], Action.UPDATE)

    assert [d.allowed for d in decisions] == [False, True]
    assert backend.calls == []


async def test_a_list_takes_individual_notes_only(authorizer: Authorizer) -> None:
    with pytest.raises(ValueError, match="individual resources"):
        await authorizer.filter("alice", [Resource("note")])


# --- Audiences: who among many subscribers may see a note ---------------------------------


async def test_an_audience_is_decided_in_one_backend_call_and_then_cached(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    decisions = await authorizer.audience(NOTE, ["alice", "bob", "carol", "alice"])

    assert [(d.subject, d.allowed, d.from_cache) for d in decisions] == [
        ("alice", True, False),
        ("bob", True, False),
        ("carol", False, False),
    ]
    again = await authorizer.audience(NOTE, ["bob", "carol", "dave"])
    assert [(d.subject, d.allowed, d.from_cache) for d in again] == [
        ("bob", True, True),
        ("carol", False, True),
        ("dave", False, False),
    ]
    assert backend.calls == ["audience:3", "audience:1"]


async def test_audiences_asked_while_a_lookup_runs_wait_for_it_instead_of_asking_again(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    backend.gate.clear()
    first = asyncio.create_task(authorizer.audience(NOTE, ["alice", "bob"]))
    await asyncio.sleep(0)
    others = [asyncio.create_task(authorizer.audience(NOTE, ["bob", "alice"])) for _ in range(50)]
    await asyncio.sleep(0)
    backend.gate.set()

    answers = await asyncio.gather(first, *others)

    assert backend.calls == ["audience:2"]
    assert all(
        {(d.subject, d.allowed) for d in answer} == {("alice", True), ("bob", True)}
        for answer in answers
    )


async def test_a_lookup_begun_before_a_relationship_change_is_not_joined(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    backend.gate.clear()
    first = asyncio.create_task(authorizer.audience(NOTE, ["bob"]))
    await asyncio.sleep(0)
    await authorizer.unshare("n1", "bob")
    second = asyncio.create_task(authorizer.audience(NOTE, ["bob"]))
    await asyncio.sleep(0)
    backend.gate.set()

    await first
    (decision,) = await second
    assert not decision.allowed
    assert sorted(backend.calls) == ["audience:1", "audience:1", "unshare"]


async def test_the_budget_bounds_how_many_audience_lookups_run_at_once(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    budget = asyncio.Semaphore(1)
    backend.gate.clear()
    lookups = [
        asyncio.create_task(authorizer.audience(Resource.note(f"n{i}"), ["alice"], budget=budget))
        for i in range(3)
    ]
    await asyncio.sleep(0.01)
    assert backend.calls == ["audience:1"]
    backend.gate.set()
    await asyncio.gather(*lookups)
    assert backend.calls == ["audience:1"] * 3


async def test_during_an_outage_an_audience_is_answered_from_the_cache_or_fails_closed(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.audience(NOTE, ["bob"])
    clock.now += TTL + 10
    backend.down = True

    (decision,) = await authorizer.audience(NOTE, ["bob"])
    assert (decision.allowed, decision.from_cache, decision.stale) == (True, True, True)
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.audience(NOTE, ["bob", "carol"])


# --- Outages ----------------------------------------------------------------------------------


async def test_during_an_outage_cached_decisions_keep_being_served_even_stale_ones(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    clock.now += TTL + 10  # the decision is stale now
    backend.down = True

    with capture_logs() as logs:
        decision = await authorizer.check("bob", NOTE, Action.READ)

    assert decision.allowed
    assert decision.from_cache
    assert decision.stale
    assert logs.find("dependency unavailable", service="authorization")
    assert authorizer.health_status() is AuthzHealth.DEGRADED


async def test_during_an_outage_a_decision_not_cached_fails_closed_with_503(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    backend.down = True

    with pytest.raises(AuthorizationUnavailable) as refused:
        await authorizer.check("bob", NOTE, Action.READ)

    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert refused.value.code.http_status == 503
    assert refused.value.headers == {"Retry-After": "5"}


async def test_once_the_outage_outlasts_the_window_even_cached_decisions_fail_closed(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    backend.down = True
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("alice", NOTE, Action.READ)  # the outage starts here
    clock.now += WINDOW - 1
    assert (await authorizer.check("bob", NOTE, Action.READ)).from_cache
    clock.now += 1

    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("bob", NOTE, Action.READ)
    assert authorizer.health_status() is AuthzHealth.UNHEALTHY


async def test_a_fresh_entry_is_not_trusted_once_failing_closed(
    backend: MemoryBackend, clock: Clock
) -> None:
    # A TTL longer than the window (possible outside production): past the window, a cached
    # decision that is still fresh must not be served without asking the backend.
    cache = DecisionCache(ttl=3600, maxsize=10, stale_window=60, clock=clock)
    authorizer = Authorizer(backend, cache=cache, stale_window=60, clock=clock)
    await authorizer.check("bob", NOTE, Action.READ)
    backend.down = True
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("carol", NOTE, Action.READ)
    clock.now += 61
    backend.calls.clear()

    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("bob", NOTE, Action.READ)
    assert backend.calls == ["check"]

    backend.down = False
    decision = await authorizer.check("bob", NOTE, Action.READ)
    assert decision.allowed
    assert not decision.from_cache
    assert authorizer.health_status() is AuthzHealth.HEALTHY


async def test_a_list_during_an_outage_is_served_from_the_cache_when_all_of_it_is_cached(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.filter("bob", [NOTE, OTHER])
    clock.now += TTL + 1
    backend.down = True

    decisions = await authorizer.filter("bob", [NOTE, OTHER])

    assert [(d.allowed, d.from_cache, d.stale) for d in decisions] == [
        (True, True, True),
        (False, True, True),
    ]
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.filter("bob", [NOTE, Resource.note("n3")])
    clock.now += WINDOW
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.filter("bob", [NOTE, OTHER])


async def test_a_list_mixing_fresh_and_stale_entries_during_an_outage_marks_only_the_stale(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    clock.now += TTL + 1
    await authorizer.check("bob", OTHER, Action.READ)
    backend.down = True

    decisions = await authorizer.filter("bob", [NOTE, OTHER])

    assert [(d.resource, d.stale) for d in decisions] == [(NOTE, True), (OTHER, False)]


async def test_writes_during_an_outage_fail_with_503_and_still_invalidate(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    await authorizer.check("bob", NOTE, Action.READ)
    backend.down = True

    with pytest.raises(AuthorizationUnavailable):
        await authorizer.unshare("n1", "bob")

    # The write may have been applied before the connection dropped: the old answer is gone.
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("bob", NOTE, Action.READ)


async def test_recovery_ends_the_outage(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    backend.down = True
    with pytest.raises(AuthorizationUnavailable):
        await authorizer.check("bob", NOTE, Action.READ)
    clock.now += WINDOW + 1
    backend.down = False

    with capture_logs() as logs:
        assert (await authorizer.filter("bob", [NOTE]))[0].allowed

    assert authorizer.health_status() is AuthzHealth.HEALTHY
    assert logs.find("dependency available again", service="authorization")


# --- Health -----------------------------------------------------------------------------------


async def test_health_is_healthy_then_degraded_while_serving_from_cache_then_unhealthy(
    authorizer: Authorizer, backend: MemoryBackend, clock: Clock
) -> None:
    registry = HealthRegistry(version="test", clock=clock)
    authorizer.register_health_checks(registry)
    registry.mark_started()

    await registry.check_all()
    assert registry.status() is Status.HEALTHY
    assert authorizer.health_status() is AuthzHealth.HEALTHY

    backend.down = True
    await registry.check_all()
    assert registry.status() is Status.DEGRADED
    assert registry.report()["services"]["authorization"]["status"] == "down"
    assert registry.report()["services"]["authorization_decisions"]["status"] == "up"

    clock.now += WINDOW
    await registry.check_all()
    assert registry.status() is Status.UNHEALTHY
    assert authorizer.health_status() is AuthzHealth.UNHEALTHY

    backend.down = False
    await registry.check_all()
    assert registry.status() is Status.HEALTHY


async def test_closing_the_authorizer_closes_its_backend(
    authorizer: Authorizer, backend: MemoryBackend
) -> None:
    await authorizer.aclose()

    assert backend.calls == ["aclose"]
