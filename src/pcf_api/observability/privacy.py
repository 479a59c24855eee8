"""What the logs may say about people: client addresses, subjects, and personal data in text.

A hashed value is a keyed HMAC (SHA-256, the first 16 hex digits): the same input gives the
same output for everyone holding the key, so support can still follow one user's or one
address's lines (and find them: hash the known value with the key), while the log alone names
nobody. Without a configured key each process draws a random one, so hashes correlate within
one process only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Literal

ClientIpMode = Literal["full", "subnet", "hash", "none"]
SubjectMode = Literal["raw", "hash"]

_CACHE_SIZE = 4096  # distinct subjects and addresses remembered per key

EMAIL_MARKER = "[EMAIL]"
CARD_MARKER = "[CARD]"
PATTERN_MARKER = "[SCRUBBED]"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes, standing alone.
_CARD = re.compile(r"[0-9](?<![0-9A-Za-z_][0-9])(?:[ -]?[0-9]){12,18}(?![0-9A-Za-z_])")


class Pseudonyms:
    """Keyed hashes of subjects and addresses, remembered so each costs one dict lookup."""

    def __init__(self, key: str | None = None) -> None:
        self._known: dict[str, str] = {}
        self.set_key(key)

    def set_key(self, key: str | None) -> None:
        """A new key (None: a random one); hashes change from the next line on."""
        self.random_key = key is None
        self._key = (key or secrets.token_hex(32)).encode()
        self._known = {}

    def of(self, value: str) -> str:
        known = self._known.get(value)
        if known is None:
            if len(self._known) >= _CACHE_SIZE:
                self._known = {}
            known = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:16]
            self._known[value] = known
        return known


def subject_renderer(mode: SubjectMode, pseudonyms: Pseudonyms) -> Callable[[str], str]:
    return pseudonyms.of if mode == "hash" else same


def client_renderer(mode: ClientIpMode, pseudonyms: Pseudonyms) -> Callable[[str], str | None]:
    """The access line's ``client`` value for an address; None leaves the field out."""
    if mode == "full":
        return same
    if mode == "hash":
        return pseudonyms.of
    if mode == "none":
        return _nothing
    subnets: dict[str, str | None] = {}

    def subnet_of(address: str) -> str | None:
        known = subnets.get(address, "")
        if known == "":
            if len(subnets) >= _CACHE_SIZE:
                subnets.clear()
            known = subnets[address] = subnet(address)
        return known

    return subnet_of


def subnet(address: str) -> str | None:
    """The IPv4 /24 or IPv6 /48 an address is in (an IPv4-mapped IPv6 address counts as IPv4);
    None for anything that is not an IP address (a Unix socket's peer)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def same(value: str) -> str:
    """The value as is (``full``, ``raw``)."""
    return value


def _nothing(_: str) -> None:
    return None


class PersonalData:
    """Replaces e-mail addresses, card numbers (those that pass the Luhn check, so ids and
    timestamps of the same length stay) and configured patterns in finished lines."""

    def __init__(self, builtin: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        chosen = set(builtin)
        self.emails = "email" in chosen
        self.cards = "card" in chosen
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def scrub(self, line: str) -> str:
        if self.emails and "@" in line:
            line = _EMAIL.sub(EMAIL_MARKER, line)
        if self.cards:
            line = _CARD.sub(_card_or_not, line)
        for pattern in self.patterns:
            line = pattern.sub(PATTERN_MARKER, line)
        return line


def _card_or_not(match: re.Match[str]) -> str:
    text = match.group()
    return CARD_MARKER if luhn_valid([int(c) for c in text if c.isdigit()]) else text


def luhn_valid(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0
