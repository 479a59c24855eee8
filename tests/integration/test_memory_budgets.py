"""Memory stays within the chart's limit whatever clients send: the caches are bounded in bytes.

A real `pcf-api serve` on PostgreSQL is filled through its API — large notes from many clients
(within their rate budgets), distinct large documents, registered persisted documents, distinct
large bearer tokens, and authorization decisions of their long subjects on notes they may not
read — and its resident memory, read from /proc, must stay under the memory limit the Helm chart
gives a pod.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
import yaml

from support.databases import postgres_database
from support.servers import DEV_JSON, ServerFactory, ServerProcess

VALUES = Path(__file__).parents[2] / "deploy" / "helm" / "pcf-api" / "values.yaml"
USERS = 60
NOTES_PER_USER = 100  # within the default mutation budget: 100 a minute per client
EMOJI = "\N{GRINNING FACE}"
CONTENT = EMOJI * 10_000  # the longest content, 4 bytes a character in memory
CONCURRENCY = 8
HS256_SECRET = "memory-budget-test-secret-0123456789abcdef"
TOKEN_CLIENTS = 1100  # tokens of ~7.9 KB: past the token cache's 8 MiB
READS_PER_CLIENT = 3  # of 11 notes each (10 aliases): ~36 000 decisions, past the 32 MiB


def memory_limit_mib() -> float:
    limit = yaml.safe_load(VALUES.read_text())["resources"]["limits"]["memory"]
    match = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
    assert match is not None, limit
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def rss_mib(server: ServerProcess) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) / 1024


async def _post(client: httpx.AsyncClient, body: dict[str, object], user: str) -> httpx.Response:
    return await client.post("/graphql", json=body, headers={"X-Demo-User": user})


def _seed_notes(url: str) -> None:
    """The notes of the reproduction, written straight into PostgreSQL (creating them through
    the API takes minutes): USERS clients with NOTES_PER_USER notes each, owned by them."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    with psycopg.connect(dsn) as connection:
        connection.execute(
            """INSERT INTO notes (id, title, content, author, created_at, updated_at)
            SELECT 'notes:' || lpad(n::text, 26, '0'), 'note ' || n, %(content)s,
                   'user-' || lpad((n %% %(users)s)::text, 3, '0'), now(), now()
            FROM generate_series(1, %(count)s) AS n""",
            {"content": CONTENT, "users": USERS, "count": USERS * NOTES_PER_USER},
        )
        connection.execute(
            """INSERT INTO note_relationships (note_id, subject, relation)
            SELECT id, author, 'owner' FROM notes"""
        )


async def _read_notes(client: httpx.AsyncClient) -> None:
    """Every client reads its notes: each read puts them in the read cache."""
    query = "{ notes(limit: 100) { totalCount edges { node { id content } } } }"

    async def read(user: str) -> None:
        answer = await _post(client, {"query": query}, user)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["data"]["notes"]["totalCount"] == NOTES_PER_USER

    users = [f"user-{index:03d}" for index in range(USERS)]
    for start in range(0, USERS, CONCURRENCY):
        await asyncio.gather(*(read(user) for user in users[start : start + CONCURRENCY]))


async def _distinct_large_documents(client: httpx.AsyncClient, count: int) -> None:
    """Documents near the token limit, each different (every field unknown: cached with its
    validation errors)."""
    for number in range(count):
        fields = " ".join(f"f{number}_{index}" for index in range(1990))
        answer = await _post(client, {"query": f"{{ health {fields} }}"}, "documents")
        assert answer.status_code in (200, 400), answer.text[:300]


async def _registered_documents(client: httpx.AsyncClient, count: int) -> None:
    """Automatic persisted queries near the byte limit, in emoji: 4 bytes a character."""
    for number in range(count):
        query = f"# {number} {EMOJI * 24_000}\n{{ health {{ status }} }}"
        extensions = {
            "persistedQuery": {
                "version": 1,
                "sha256Hash": hashlib.sha256(query.encode()).hexdigest(),
            }
        }
        answer = await _post(client, {"query": query, "extensions": extensions}, "registrar")
        assert answer.status_code == 200, answer.text[:300]


def _large_token(number: int) -> str:
    """A distinct token near the 8 KiB a token may have, for a subject of the longest kind."""
    subject = f"client-{number:05d}-" + "x" * 86
    claims = {"sub": subject, "exp": 4_102_444_800, "padding": "p" * 5700}
    return jwt.encode(claims, HS256_SECRET, "HS256")


def _others_notes(number: int) -> str:
    """A document reading 11 seeded notes (one field and the 10 aliases allowed), none owned
    by the reader: each is one cached decision, a refusal."""
    first = number * 11 % (USERS * NOTES_PER_USER - 11)
    fields = " ".join(
        f'{f"n{index}: " if index else ""}note(id: "notes:{first + index + 1:026d}") {{ id }}'
        for index in range(11)
    )
    return f"{{ {fields} }}"


async def _tokens_and_decisions(client: httpx.AsyncClient) -> None:
    async def act(number: int) -> None:
        headers = {"Authorization": f"Bearer {_large_token(number)}"}
        answer = await client.post(
            "/graphql", json={"query": "{ health { status } }"}, headers=headers
        )
        assert answer.status_code == 200, answer.text[:300]
        for read in range(READS_PER_CLIENT):
            query = _others_notes(number * READS_PER_CLIENT + read)
            answer = await client.post("/graphql", json={"query": query}, headers=headers)
            assert answer.status_code == 200, answer.text[:300]

    for start in range(0, TOKEN_CLIENTS, CONCURRENCY):
        await asyncio.gather(*(act(number) for number in range(start, start + CONCURRENCY)))


async def _fill(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await _read_notes(client)
        await _distinct_large_documents(client, 40)
        await _registered_documents(client, 200)
        await _tokens_and_decisions(client)


# It fills every byte-bounded structure through the API: 86 s on a quiet machine, past the
# suite's 120 s default on a loaded one (CI, 7 Dec 2026). The bound is the harness's, not a figure.
@pytest.mark.timeout(360)
def test_large_notes_documents_and_registrations_keep_memory_under_the_charts_limit(
    server_factory: ServerFactory,
) -> None:
    with postgres_database() as url:
        server = server_factory(
            {
                **DEV_JSON,
                "PCF_DATABASE__URL": url,
                "PCF_DATABASE__AUTO_MIGRATE": "true",
                "PCF_LOG__LEVEL": "WARNING",
                "PCF_AUTH__HS256_SECRET": HS256_SECRET,
            }
        )
        server.wait_until_ready(timeout=60)
        _seed_notes(url)
        idle = rss_mib(server)
        asyncio.run(_fill(server.url))
        full = rss_mib(server)
        server.terminate()
        server.wait()

    limit = memory_limit_mib()
    print(f"RSS idle {idle:.0f} MiB, full {full:.0f} MiB, limit {limit:.0f} MiB")
    assert full < limit, f"RSS {full:.0f} MiB (idle {idle:.0f}) is over the {limit:.0f} Mi limit"
