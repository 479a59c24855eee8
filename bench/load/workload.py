"""The request mix of the load test, shared by the locustfile (which sends it) and run.py (which
seeds the database it reads): who the clients are, what they send and how often.

Each locust user is one API client with its own identity (``load-0001``, …), so the per-client
rate limits apply per user as in production. It sends ``user_rate`` requests/s, cycling through
``CYCLE`` from a random position:

=============  =====  ============================================================
operation      share  request
=============  =====  ============================================================
notes          40 %   first pages of the notes it may read (``totalCount`` included)
note           35 %   one note by id (one it owns or that was shared with it)
search          5 %   ``searchNotes`` for a word of the seeded vocabulary
update         15 %   ``updateNote`` of one of its own notes (new content)
create          5 %   ``createNote``
=============  =====  ============================================================

With 2 requests/s per user that is 96 queries, 24 mutations and 6 searches per minute per
client: under the default budgets (1000, 100 and 10 per minute), so no request is refused for
its rate, and the search, the tightest budget, comes exactly every 10 s instead of at random.
"""

from __future__ import annotations

import random

CYCLE = (
    "notes",
    "note",
    "notes",
    "note",
    "update",
    "notes",
    "note",
    "notes",
    "search",
    "note",
    "notes",
    "create",
    "notes",
    "note",
    "update",
    "notes",
    "note",
    "notes",
    "update",
    "note",
)

NOTES = (
    "query Notes($offset: Int!) { notes(limit: 10, offset: $offset) "
    "{ edges { node { id title author updatedAt } } totalCount pageInfo { hasNextPage } } }"
)
NOTES_AT_START = "query MyNotes { notes(limit: 50) { edges { node { id author } } totalCount } }"
NOTE = "query Note($id: ID!) { note(id: $id) { id title content author updatedAt } }"
SEARCH = "query Search($q: String!) { searchNotes(query: $q, limit: 10) { id title author } }"
UPDATE = (
    "mutation Update($id: ID!, $input: UpdateNoteInput!) "
    "{ updateNote(id: $id, input: $input) { id updatedAt } }"
)
CREATE = "mutation Create($input: CreateNoteInput!) { createNote(input: $input) { id } }"

VOCABULARY = (
    "budget",
    "roadmap",
    "release",
    "incident",
    "meeting",
    "design",
    "hiring",
    "customer",
    "database",
    "migration",
    "latency",
    "holiday",
    "invoice",
    "security",
    "onboarding",
    "retrospective",
)

# Offered requests/s of the default profile's steps: from light load to past one process's
# ceiling (≈ 450-700 req/s on the 2-core build machine), 25 s each: about 4 minutes.
DEFAULT_RATES = "50,100,150,200,250,300,400,500,600"

# The seed: every client owns this many notes and may read this many of others'.
OWN_NOTES = 20
SHARED_WITH_EACH = 40


def user_name(number: int) -> str:
    return f"load-{number:04d}"


def title(rng: random.Random) -> str:
    return f"{rng.choice(VOCABULARY).capitalize()} notes {rng.randrange(10_000)}"


def content(rng: random.Random) -> str:
    words = rng.choices(VOCABULARY, k=rng.randrange(20, 80))
    return " ".join(words).capitalize() + "."


def rotated_cycle(rng: random.Random) -> list[str]:
    start = rng.randrange(len(CYCLE))
    return list(CYCLE[start:] + CYCLE[:start])
