"""What the logs may say about people: addresses by subnet or hash, subjects by keyed hash,
e-mail addresses and card numbers replaced."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pcf_api.observability.privacy import (
    CARD_MARKER,
    EMAIL_MARKER,
    PATTERN_MARKER,
    PersonalData,
    Pseudonyms,
    client_renderer,
    luhn_valid,
    subject_renderer,
    subnet,
)

KEY = "support-team-hash-key-0123456789abcdef"


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4 through a dual-stack socket
        ("testclient", None),
        ("", None),
    ],
)
def test_subnet_is_the_ipv4_24_or_the_ipv6_48(address: str, network: str | None) -> None:
    assert subnet(address) == network


def test_a_hash_is_the_keyed_hmac_anyone_with_the_key_can_recompute() -> None:
    pseudonyms = Pseudonyms(KEY)
    expected = hmac.new(KEY.encode(), b"alice", hashlib.sha256).hexdigest()[:16]

    assert pseudonyms.of("alice") == expected
    assert pseudonyms.of("alice") == expected  # remembered, the same
    assert pseudonyms.of("bob") != expected
    assert Pseudonyms("another-key-of-32-characters-or-so").of("alice") != expected


def test_without_a_key_hashes_correlate_within_the_process_only() -> None:
    first, second = Pseudonyms(), Pseudonyms()
    assert first.random_key
    assert first.of("alice") == first.of("alice")
    assert first.of("alice") != second.of("alice")


def test_a_new_key_changes_the_hashes_from_then_on() -> None:
    pseudonyms = Pseudonyms(KEY)
    before = pseudonyms.of("alice")
    pseudonyms.set_key("rotated-key-0123456789abcdef-0123")
    assert pseudonyms.of("alice") != before
    assert not pseudonyms.random_key


def test_each_client_ip_mode() -> None:
    pseudonyms = Pseudonyms(KEY)
    assert client_renderer("full", pseudonyms)("203.0.113.77") == "203.0.113.77"
    assert client_renderer("subnet", pseudonyms)("203.0.113.77") == "203.0.113.0/24"
    assert client_renderer("hash", pseudonyms)("203.0.113.77") == pseudonyms.of("203.0.113.77")
    assert client_renderer("none", pseudonyms)("203.0.113.77") is None


def test_each_subject_mode() -> None:
    pseudonyms = Pseudonyms(KEY)
    assert subject_renderer("raw", pseudonyms)("alice") == "alice"
    assert subject_renderer("hash", pseudonyms)("alice") == pseudonyms.of("alice")


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("mail alice.smith+notes@example.co.uk now", f"mail {EMAIL_MARKER} now"),
        ('{"user":"bob@example.com"}', f'{{"user":"{EMAIL_MARKER}"}}'),
        ("card 4111 1111 1111 1111 used", f"card {CARD_MARKER} used"),
        ("card 4111-1111-1111-1111 used", f"card {CARD_MARKER} used"),
        ('"pan":"5500000000000004"', f'"pan":"{CARD_MARKER}"'),
        # Not cards: the Luhn check fails, or the digits are part of a longer word or number.
        ("id 4111111111111112 kept", "id 4111111111111112 kept"),
        ("trace 4bf92f3577b34da6a3ce929d0e0e4736", "trace 4bf92f3577b34da6a3ce929d0e0e4736"),
        (
            "at 2026-12-06T10:11:12.123456Z took 12.5 ms",
            "at 2026-12-06T10:11:12.123456Z took 12.5 ms",
        ),
        ("no @ here, just a handle @alice", "no @ here, just a handle @alice"),
    ],
)
def test_builtin_patterns(text: str, scrubbed: str) -> None:
    assert PersonalData(["email", "card"]).scrub(text) == scrubbed


def test_patterns_are_only_applied_when_chosen() -> None:
    text = "alice@example.com paid with 4111111111111111"
    assert PersonalData([]).scrub(text) == text
    assert PersonalData(["card"]).scrub(text) == f"alice@example.com paid with {CARD_MARKER}"
    assert PersonalData(["email"]).scrub(text) == f"{EMAIL_MARKER} paid with 4111111111111111"


def test_configured_patterns_are_replaced_too() -> None:
    personal = PersonalData([], [r"\bDE\d{20}\b", r"tel:\+?[0-9 ]+"])
    assert (
        personal.scrub("iban DE89370400440532013000 tel:+49 30 1234")
        == f"iban {PATTERN_MARKER} {PATTERN_MARKER}"
    )


def test_luhn() -> None:
    assert luhn_valid([int(c) for c in "79927398713"])
    assert not luhn_valid([int(c) for c in "79927398710"])
