"""The decision cache (spec: auth/authorizer.py DecisionCache).

Fresh for ``ttl`` seconds, then stale (kept only for outages) until ``ttl + stale_window``,
then gone; bounded; every decision about a resource can be dropped at once.
"""

from __future__ import annotations

from pcf_api.auth.authorizer import CachedDecision, DecisionCache
from pcf_api.auth.policy import Action, Resource
from support.memory import retained_bytes

NOTE_A = Resource.note("a")
NOTE_B = Resource.note("b")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(
    clock: Clock, *, ttl: float = 300, maxsize: int = 100, window: float = 300
) -> DecisionCache:
    return DecisionCache(ttl=ttl, maxsize=maxsize, stale_window=window, clock=clock)


def test_a_decision_is_fresh_for_the_ttl_then_stale_for_the_window_then_gone() -> None:
    clock = Clock()
    decisions = cache(clock)
    decisions.put(("alice", NOTE_A, Action.READ), True)

    clock.now += 299.9
    assert decisions.get(("alice", NOTE_A, Action.READ)) == CachedDecision(True, fresh=True)
    clock.now += 0.1
    assert decisions.get(("alice", NOTE_A, Action.READ)) == CachedDecision(True, fresh=False)
    clock.now += 299.9
    assert decisions.get(("alice", NOTE_A, Action.READ)) == CachedDecision(True, fresh=False)
    clock.now += 0.1
    assert decisions.get(("alice", NOTE_A, Action.READ)) is None


def test_decisions_are_kept_per_subject_resource_and_action() -> None:
    decisions = cache(Clock())
    decisions.put(("alice", NOTE_A, Action.READ), True)
    decisions.put(("alice", NOTE_A, Action.DELETE), False)

    assert decisions.get(("alice", NOTE_A, Action.DELETE)) == CachedDecision(False, fresh=True)
    assert decisions.get(("bob", NOTE_A, Action.READ)) is None
    assert decisions.get(("alice", NOTE_B, Action.READ)) is None


def test_the_cache_is_bounded_and_drops_the_least_recently_used_decision() -> None:
    decisions = cache(Clock(), maxsize=2)
    decisions.put(("alice", NOTE_A, Action.READ), True)
    decisions.put(("bob", NOTE_A, Action.READ), True)
    decisions.get(("alice", NOTE_A, Action.READ))
    decisions.put(("carol", NOTE_A, Action.READ), True)

    assert len(decisions) == 2
    assert decisions.get(("bob", NOTE_A, Action.READ)) is None
    assert decisions.get(("alice", NOTE_A, Action.READ)) is not None


def test_invalidating_a_resource_drops_every_decision_about_it_and_nothing_else() -> None:
    decisions = cache(Clock())
    for subject in ("alice", "bob"):
        for action in (Action.READ, Action.UPDATE):
            decisions.put((subject, NOTE_A, action), True)
    decisions.put(("alice", NOTE_B, Action.READ), True)

    assert decisions.invalidate(NOTE_A) == 4
    assert decisions.get(("alice", NOTE_A, Action.READ)) is None
    assert decisions.get(("bob", NOTE_A, Action.UPDATE)) is None
    assert decisions.get(("alice", NOTE_B, Action.READ)) is not None
    assert decisions.invalidate(NOTE_A) == 0


def test_an_answer_fetched_before_an_invalidation_is_not_cached() -> None:
    decisions = cache(Clock())
    epoch = decisions.epoch  # a check starts and asks the backend …
    decisions.invalidate(NOTE_A)  # … meanwhile the note is unshared …
    decisions.put(("alice", NOTE_A, Action.READ), True, epoch=epoch)  # … the old answer arrives

    assert decisions.get(("alice", NOTE_A, Action.READ)) is None
    decisions.put(("alice", NOTE_A, Action.READ), False, epoch=decisions.epoch)
    assert decisions.get(("alice", NOTE_A, Action.READ)) == CachedDecision(False, fresh=True)


def test_a_zero_ttl_or_size_disables_caching() -> None:
    for disabled in (cache(Clock(), ttl=0), cache(Clock(), maxsize=0)):
        disabled.put(("alice", NOTE_A, Action.READ), True)
        assert not disabled.enabled
        assert disabled.get(("alice", NOTE_A, Action.READ)) is None


def test_clear_forgets_everything() -> None:
    decisions = cache(Clock())
    decisions.put(("alice", NOTE_A, Action.READ), True)
    epoch = decisions.epoch

    decisions.clear()

    assert len(decisions) == 0
    assert decisions.epoch != epoch
    assert decisions.invalidate(NOTE_A) == 0


def test_the_invalidation_index_stays_bounded_as_entries_are_evicted() -> None:
    decisions = cache(Clock(), maxsize=10)
    for number in range(1000):
        decisions.put(("alice", Resource.note(str(number)), Action.READ), True)

    assert len(decisions) == 10
    assert len(decisions._by_resource) <= 20
    assert decisions.invalidate(Resource.note("999")) == 1
    assert decisions.invalidate(Resource.note("0")) == 0


def test_the_bytes_counted_cover_what_the_decisions_take_in_memory() -> None:
    # Long subjects (a token's sub may have 100 characters), a note each: the index's worst case.
    subjects = [f"{'s' * 90}{index:010d}" for index in range(5000)]
    resources = [Resource.note(f"notes:{index:026d}") for index in range(5000)]
    decisions = DecisionCache(maxsize=1_000_000, max_bytes=1 << 40, clock=Clock())

    def fill() -> DecisionCache:
        for subject, resource in zip(subjects, resources, strict=True):
            decisions.put((subject, resource, Action.READ), True)
        return decisions

    assert retained_bytes(fill) <= decisions.size_bytes


def test_bounded_in_bytes_as_well_as_in_count() -> None:
    decisions = DecisionCache(maxsize=1_000_000, max_bytes=200_000, clock=Clock())
    for index in range(5000):
        decisions.put((f"user-{index}", Resource.note(f"notes:{index}"), Action.READ), True)
    assert decisions.size_bytes <= 200_000
    assert 0 < len(decisions) < 5000
