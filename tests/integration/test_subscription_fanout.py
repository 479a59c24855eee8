"""Fan-out at the documented 1 000 subscriptions per instance, on PostgreSQL, in the production
profile, through real graphql-transport-ws sockets (spec: docs/operations.md, "Subscriptions").

Every create succeeds, every subscription receives every note its user may read and nothing
else, in creation order, none is ended by the server, and an unrelated query keeps being
answered fast (p99 under 200 ms, timed from a process of its own): authorization is decided once
per user and note, in one batch per event, on a small share of the database pool. With 200
creates, 1 000 subscriptions over 10 users receive 20 000 messages, 1 000 of one user 200 000.
"""

from __future__ import annotations

import pytest

from support.databases import postgres_database
from support.fanout import run_fan_out, server_environment
from support.servers import ServerFactory

pytestmark = pytest.mark.anyio

SUBSCRIBERS = 1000
CREATES = 200
PROBE_P99_SECONDS = 0.2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("users", [10, 1], ids=["10-users", "1-user"])
async def test_a_thousand_subscribers_receive_every_note_they_may_read(
    server_factory: ServerFactory, users: int
) -> None:
    with postgres_database() as url:
        server = server_factory(server_environment(url))
        server.wait_until_ready(timeout=60)
        result = await run_fan_out(
            server.url,
            users=users,
            subscribers=SUBSCRIBERS,
            creates=CREATES,
            per_socket=4,
            deliver_within=120,
        )
        assert not result.failed_creates, result.summary()
        assert result.missing == 0, result.summary()
        assert result.wrong == 0, result.summary()
        assert not result.ended, result.summary()
        assert result.probe_p99 < PROBE_P99_SECONDS, result.summary()
