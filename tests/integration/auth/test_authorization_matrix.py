"""The authorization matrix, identical on every backend (spec: auth/policy.py).

owner, shared writer, shared reader and stranger, by read, list, update, delete, share — on the
local backend over SQLite and PostgreSQL, and on SpiceDB (whose stand-in evaluates the shipped
deploy/spicedb/schema.zed), each through the Authorizer with its decision cache.
"""

from __future__ import annotations

import pytest

from pcf_api.auth.authorizer import Authorizer
from pcf_api.auth.policy import Action, AuthorizationBackend, Resource, Role

pytestmark = pytest.mark.anyio

NOTE_ID = "notes:01HZX3J5Q8A1B2C3D4E5F6G7H8"  # the shape new_note_id() produces
OTHER_ID = "notes:01HZX3J5Q8A1B2C3D4E5F6G7H9"
NOTE = Resource.note(NOTE_ID)
OTHER = Resource.note(OTHER_ID)

OWNER, WRITER, READER, STRANGER = "olivia", "walt@example.com", "rita", "sam"
ALLOWED = {
    OWNER: {Action.READ, Action.UPDATE, Action.DELETE, Action.SHARE},
    WRITER: {Action.READ, Action.UPDATE},
    READER: {Action.READ},
    STRANGER: set(),
}
ACTIONS = [Action.READ, Action.UPDATE, Action.DELETE, Action.SHARE]


@pytest.fixture
async def authorizer(backend: AuthorizationBackend) -> Authorizer:
    authorizer = Authorizer(backend)
    await authorizer.create(NOTE_ID, OWNER)
    await authorizer.share(NOTE_ID, WRITER, Role.WRITER)
    await authorizer.share(NOTE_ID, READER, Role.READER)
    await authorizer.create(OTHER_ID, STRANGER)
    return authorizer


@pytest.mark.parametrize("subject", [OWNER, WRITER, READER, STRANGER])
@pytest.mark.parametrize("action", ACTIONS)
async def test_each_subject_may_do_exactly_what_its_relation_allows(
    authorizer: Authorizer, subject: str, action: Action
) -> None:
    decision = await authorizer.check(subject, NOTE, action)

    assert decision.allowed is (action in ALLOWED[subject])
    assert decision.backend == authorizer.backend.name
    assert not decision.from_cache


@pytest.mark.parametrize("subject", [OWNER, WRITER, READER, STRANGER])
async def test_a_list_shows_each_subject_only_the_notes_it_may_read(
    authorizer: Authorizer, subject: str
) -> None:
    decisions = await authorizer.filter(subject, [NOTE, OTHER])

    readable = {decision.resource for decision in decisions if decision.allowed}
    expected = {NOTE} if Action.READ in ALLOWED[subject] else set()
    if subject == STRANGER:
        expected = {OTHER}
    assert readable == expected


async def test_the_same_check_twice_is_answered_from_the_cache(authorizer: Authorizer) -> None:
    first = await authorizer.check(READER, NOTE, Action.READ)
    second = await authorizer.check(READER, NOTE, Action.READ)

    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.allowed
    assert second.allowed


async def test_unsharing_takes_access_away_at_once(authorizer: Authorizer) -> None:
    assert (await authorizer.check(READER, NOTE, Action.READ)).allowed

    await authorizer.unshare(NOTE_ID, READER)

    assert not (await authorizer.check(READER, NOTE, Action.READ)).allowed
    assert (await authorizer.check(WRITER, NOTE, Action.UPDATE)).allowed


async def test_sharing_again_replaces_the_role(authorizer: Authorizer) -> None:
    assert (await authorizer.check(WRITER, NOTE, Action.UPDATE)).allowed

    await authorizer.share(NOTE_ID, WRITER, Role.READER)

    assert not (await authorizer.check(WRITER, NOTE, Action.UPDATE)).allowed
    assert (await authorizer.check(WRITER, NOTE, Action.READ)).allowed
    await authorizer.share(NOTE_ID, READER, Role.WRITER)
    assert (await authorizer.check(READER, NOTE, Action.UPDATE)).allowed


async def test_the_owner_stays_owner_whatever_is_shared_or_unshared_with_them(
    authorizer: Authorizer,
) -> None:
    await authorizer.share(NOTE_ID, OWNER, Role.READER)
    assert (await authorizer.check(OWNER, NOTE, Action.DELETE)).allowed

    await authorizer.unshare(NOTE_ID, OWNER)

    for action in ACTIONS:
        assert (await authorizer.check(OWNER, NOTE, action)).allowed


async def test_deleting_a_note_drops_every_relationship(authorizer: Authorizer) -> None:
    await authorizer.check(OWNER, NOTE, Action.READ)

    await authorizer.delete(NOTE_ID)

    for subject in (OWNER, WRITER, READER):
        for action in ACTIONS:
            assert not (await authorizer.check(subject, NOTE, action)).allowed
    assert (await authorizer.check(STRANGER, OTHER, Action.DELETE)).allowed


async def test_writes_are_idempotent(authorizer: Authorizer) -> None:
    await authorizer.create(NOTE_ID, OWNER)
    await authorizer.share(NOTE_ID, READER, Role.READER)
    await authorizer.unshare(NOTE_ID, "nobody")
    await authorizer.delete("notes:never-existed")

    assert (await authorizer.check(OWNER, NOTE, Action.SHARE)).allowed
    assert (await authorizer.check(READER, NOTE, Action.READ)).allowed


async def test_an_empty_list_needs_no_backend(authorizer: Authorizer) -> None:
    assert await authorizer.filter(OWNER, []) == []


async def test_subjects_with_unusual_characters_do_not_collide(authorizer: Authorizer) -> None:
    # "*" is SpiceDB's wildcard and "=3A" is the escape of ":" — neither may leak access.
    await authorizer.share(NOTE_ID, "a:b", Role.READER)

    assert (await authorizer.check("a:b", NOTE, Action.READ)).allowed
    assert not (await authorizer.check("a=3Ab", NOTE, Action.READ)).allowed
    assert not (await authorizer.check("*", NOTE, Action.READ)).allowed
    await authorizer.share(NOTE_ID, "*", Role.READER)
    assert not (await authorizer.check("someone-else", NOTE, Action.READ)).allowed


@pytest.mark.parametrize("action", ACTIONS)
async def test_the_audience_of_a_note_is_everyone_who_may_act_on_it(
    authorizer: Authorizer, action: Action
) -> None:
    subjects = [OWNER, WRITER, READER, STRANGER, "nobody"]

    decisions = await authorizer.audience(NOTE, subjects, action)

    assert [decision.subject for decision in decisions] == subjects
    allowed = {decision.subject for decision in decisions if decision.allowed}
    assert allowed == {subject for subject, actions in ALLOWED.items() if action in actions}
    assert not any(decision.from_cache for decision in decisions)
    again = await authorizer.audience(NOTE, subjects, action)
    assert all(decision.from_cache for decision in again)
    assert {decision.subject for decision in again if decision.allowed} == allowed
