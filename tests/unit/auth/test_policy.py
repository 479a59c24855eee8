"""The policy table and resource names (spec: auth/policy.py)."""

from __future__ import annotations

import pytest

from pcf_api.auth.policy import GRANTS, Action, Relation, Resource, Role, relations_granting


def test_owners_may_do_everything_writers_read_and_update_readers_only_read() -> None:
    assert GRANTS[Relation.OWNER] == {Action.READ, Action.UPDATE, Action.DELETE, Action.SHARE}
    assert GRANTS[Relation.WRITER] == {Action.READ, Action.UPDATE}
    assert GRANTS[Relation.READER] == {Action.READ}


def test_the_relations_granting_an_action_follow_the_table() -> None:
    assert relations_granting(Action.READ) == (Relation.OWNER, Relation.WRITER, Relation.READER)
    assert relations_granting(Action.UPDATE) == (Relation.OWNER, Relation.WRITER)
    assert relations_granting(Action.SHARE) == (Relation.OWNER,)
    assert relations_granting(Action.CREATE) == ()


def test_roles_map_to_relations() -> None:
    assert Role.READER.relation is Relation.READER
    assert Role.WRITER.relation is Relation.WRITER
    assert Role("WRITER") is Role.WRITER


def test_resources_print_and_parse_as_type_colon_id_even_when_the_id_has_colons() -> None:
    resource = Resource.note("notes:01HABC")

    assert str(resource) == "note:notes:01HABC"
    assert Resource.parse("note:notes:01HABC") == resource
    assert Resource.parse("note") == Resource("note")
    assert str(Resource("note")) == "note"


@pytest.mark.parametrize("text", ["user:alice", "note:", "", "notes"])
def test_unknown_or_empty_resources_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="unknown resource"):
        Resource.parse(text)
