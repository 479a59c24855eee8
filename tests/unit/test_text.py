"""What text the service accepts (spec: text.py): anything PostgreSQL's text type can hold."""

from __future__ import annotations

import pytest

from pcf_api.text import NUL, SURROGATE, unstorable


@pytest.mark.parametrize(
    "value",
    ["", "plain", "tab\tand\nnewline", "\u0001\u001f\u007f", "émoji 🎉", "\uffff", "\ue000"],
)
def test_any_unicode_text_without_nul_can_be_stored(value: str) -> None:
    assert unstorable(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("\x00", NUL),
        ("before\x00after", NUL),
        ("\ud800", SURROGATE),
        ("high\udbffonly", SURROGATE),
        ("low\udfff", SURROGATE),
        ("\ud800 then \x00", SURROGATE),  # the first one found
    ],
)
def test_nul_and_lone_surrogates_cannot(value: str, reason: object) -> None:
    assert unstorable(value) is reason


def test_the_reasons_name_a_stable_constraint_and_say_what_is_wrong() -> None:
    assert (NUL.constraint, SURROGATE.constraint) == ("no_nul", "valid_unicode")
    assert NUL.message("content") == "content must not contain the NUL character (U+0000)."
    assert SURROGATE.message("title") == (
        "title must not contain a lone surrogate (U+D800 to U+DFFF): it is not Unicode."
    )
