"""Subscriptions over WebSocket against real servers, with an independent protocol client."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets

from support.databases import postgres_database
from support.servers import DEV_JSON, ServerFactory
from support.wsclient import LEGACY_WS, TRANSPORT_WS, SubscriptionClient

pytestmark = pytest.mark.anyio

CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"


def _mutate(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}})
    body = response.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def _create(url: str, title: str) -> str:
    data = _mutate(url, CREATE, {"i": {"title": title, "content": "c", "author": "alice"}})
    return str(data["createNote"]["id"])


def _ws_url(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


async def _settle() -> None:
    """Let the server register the subscription with the broker before publishing."""
    await asyncio.sleep(0.3)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_note_created_reaches_a_subscriber(
    server_factory: ServerFactory, tmp_path: Path, protocol: str
) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db"}
    )
    server.wait_until_ready()
    async with SubscriptionClient(_ws_url(server), protocol) as client:
        await client.subscribe("1", "subscription { noteCreated { id title author } }")
        await _settle()
        note_id = await asyncio.to_thread(_create, server.url, "hello")
        operation, data = await client.next_data()
        assert operation == "1"
        assert data == {"noteCreated": {"id": note_id, "title": "hello", "author": "alice"}}
        await client.stop("1")


async def test_subscribers_on_one_replica_see_changes_made_on_another_in_order(
    server_factory: ServerFactory,
) -> None:
    with postgres_database() as url:
        env = {**DEV_JSON, "PCF_DATABASE__URL": url}
        writer = server_factory(env)
        reader = server_factory(env)
        writer.wait_until_ready()
        reader.wait_until_ready()
        async with SubscriptionClient(_ws_url(reader)) as client:
            await client.subscribe("c", "subscription { noteCreated { id title } }")
            await client.subscribe("u", "subscription { noteUpdated { id title } }")
            await client.subscribe("d", "subscription { noteDeleted }")
            await _settle()

            first = await asyncio.to_thread(_create, writer.url, "one")
            second = await asyncio.to_thread(_create, writer.url, "two")
            await asyncio.to_thread(
                _mutate,
                writer.url,
                'mutation($id: ID!) { updateNote(id: $id, input: {title: "one*"}) { id } }',
                {"id": first},
            )
            await asyncio.to_thread(
                _mutate, writer.url, "mutation($id: ID!) { deleteNote(id: $id) }", {"id": second}
            )

            received = [await client.next_data() for _ in range(4)]
            assert received == [
                ("c", {"noteCreated": {"id": first, "title": "one"}}),
                ("c", {"noteCreated": {"id": second, "title": "two"}}),
                ("u", {"noteUpdated": {"id": first, "title": "one*"}}),
                ("d", {"noteDeleted": second}),
            ]


async def test_note_updated_filters_by_id(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db"}
    )
    server.wait_until_ready()
    watched = await asyncio.to_thread(_create, server.url, "watched")
    other = await asyncio.to_thread(_create, server.url, "other")
    async with SubscriptionClient(_ws_url(server)) as client:
        await client.subscribe(
            "1", "subscription($id: ID) { noteUpdated(id: $id) { id title } }", {"id": watched}
        )
        await _settle()
        update = "mutation($id: ID!, $t: String) { updateNote(id: $id, input: {title: $t}) { id } }"
        await asyncio.to_thread(_mutate, server.url, update, {"id": other, "t": "x"})
        await asyncio.to_thread(_mutate, server.url, update, {"id": watched, "t": "seen"})
        assert await client.next_data() == ("1", {"noteUpdated": {"id": watched, "title": "seen"}})


async def test_the_eleventh_subscription_of_one_client_is_refused(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            # The limit on concurrent subscriptions, not the one on new subscriptions per minute.
            "PCF_RATE_LIMIT__SUBSCRIPTIONS": "100/minute",
        }
    )
    server.wait_until_ready()
    async with SubscriptionClient(_ws_url(server)) as client:
        for index in range(10):
            await client.subscribe(str(index), "subscription { noteDeleted }")
        await _settle()
        await client.subscribe("10", "subscription { noteDeleted }")
        message = await client.receive()
        # An execution error of the subscription: a result with errors, then the end.
        assert (message["id"], message["type"]) == ("10", "next"), message
        (error,) = message["payload"]["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert len(error["extensions"]["traceId"]) == 32
        assert await client.receive() == {"id": "10", "type": "complete"}

    # Disconnecting released all ten: a new connection of the same client gets ten again.
    async with SubscriptionClient(_ws_url(server)) as client:
        for index in range(10):
            await client.subscribe(str(index), "subscription { noteDeleted }")
        await _settle()
        note_id = await asyncio.to_thread(_create, server.url, "gone")
        await asyncio.to_thread(
            _mutate, server.url, "mutation($id: ID!) { deleteNote(id: $id) }", {"id": note_id}
        )
        received = [await client.next_data() for _ in range(10)]
        assert sorted(operation for operation, _ in received) == sorted(map(str, range(10)))
        assert {data["noteDeleted"] for _, data in received} == {note_id}


async def test_subscription_documents_obey_the_query_limits(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db"}
    )
    server.wait_until_ready()
    aliases = " ".join(f"a{i}: noteDeleted" for i in range(11))
    async with SubscriptionClient(_ws_url(server)) as client:
        await client.subscribe("1", f"subscription {{ {aliases} }}")
        message = await client.receive()
        assert (message["id"], message["type"]) == ("1", "error"), message
        assert message["payload"][0]["extensions"]["code"] == "TOO_MANY_ALIASES"


async def test_on_shutdown_subscribers_get_close_1001_before_the_process_exits(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_SERVER__DRAIN_SECONDS": "0.5",
        }
    )
    server.wait_until_ready()
    async with SubscriptionClient(_ws_url(server)) as client:
        await client.subscribe("1", "subscription { noteCreated { id } }")
        await _settle()
        server.terminate(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.receive(within=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert time.monotonic() - started < 5
    assert await asyncio.to_thread(server.wait, 20) == 0


async def test_subscribers_see_only_changes_to_notes_they_may_read(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db"}
    )
    server.wait_until_ready()
    everything = (
        "subscription { noteCreated { id } }",
        "subscription { noteUpdated { id title } }",
        "subscription { noteDeleted }",
    )
    async with (
        SubscriptionClient(_ws_url(server), headers={"X-Demo-User": "sam"}) as sam,
        SubscriptionClient(_ws_url(server), headers={"X-Demo-User": "zed"}) as zed,
    ):
        for client in (sam, zed):
            for index, query in enumerate(everything):
                await client.subscribe(str(index), query)
        await _settle()

        private = await asyncio.to_thread(_create, server.url, "private")
        shared = await asyncio.to_thread(_create, server.url, "shared")
        share = 'mutation($id: ID!) { shareNote(id: $id, user: "sam", role: READER) }'
        await asyncio.to_thread(_mutate, server.url, share, {"id": shared})
        update = "mutation($id: ID!, $t: String) { updateNote(id: $id, input: {title: $t}) { id } }"
        await asyncio.to_thread(_mutate, server.url, update, {"id": private, "t": "p*"})
        await asyncio.to_thread(_mutate, server.url, update, {"id": shared, "t": "s*"})
        delete = "mutation($id: ID!) { deleteNote(id: $id) }"
        await asyncio.to_thread(_mutate, server.url, delete, {"id": private})
        await asyncio.to_thread(_mutate, server.url, delete, {"id": shared})

        # sam sees the shared note from the moment it was shared; nothing of the private one.
        assert [await sam.next_data() for _ in range(2)] == [
            ("1", {"noteUpdated": {"id": shared, "title": "s*"}}),
            ("2", {"noteDeleted": shared}),
        ]
        # zed may read neither note: nothing arrives.
        with pytest.raises(TimeoutError):
            await zed.receive(within=1.0)
        with pytest.raises(TimeoutError):
            await sam.receive(within=0.5)


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer not.a.token"}, {}],
    ids=["bad-token", "no-credentials"],
)
async def test_a_websocket_without_a_valid_identity_is_refused_at_the_handshake(
    server_factory: ServerFactory, tmp_path: Path, headers: dict[str, str]
) -> None:
    env = {
        **DEV_JSON,
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
        "PCF_AUTH__DEMO_USER": "",  # tokens only, as in production
    }
    server = server_factory(env)
    server.wait_until_ready()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with SubscriptionClient(_ws_url(server), headers=headers):
            pass
    assert refused.value.response.status_code == 403
    assert server.process.poll() is None
    assert not [line for line in server.log_lines() if line["level"] in ("ERROR", "FATAL")]


async def test_searches_over_the_websocket_spend_the_same_budget(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {**DEV_JSON, "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db"}
    )
    server.wait_until_ready()
    async with SubscriptionClient(_ws_url(server)) as client:
        codes = []
        for index in range(11):
            await client.subscribe(str(index), '{ searchNotes(query: "x") { id } }')
            message = await client.receive()
            if message["type"] == "error":  # refused before execution: an error, no complete
                codes.append(message["payload"][0]["extensions"]["code"])
                continue
            errors = message["payload"].get("errors")
            codes.append(errors[0]["extensions"]["code"] if errors else "ok")
            assert (await client.receive())["type"] == "complete"
    assert codes == ["ok"] * 10 + ["RATE_LIMITED"]


async def test_a_subscription_ends_when_its_token_expires(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    secret = "subscription-test-hs256-Secret-0123456789"
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_AUTH__HS256_SECRET": secret,
        }
    )
    server.wait_until_ready()
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 2}, secret, "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    async with SubscriptionClient(_ws_url(server), headers=headers) as client:
        await client.subscribe("1", "subscription { noteCreated { id } }")
        message = await client.receive(within=10)
    assert message["type"] in ("next", "error"), message
    payload = message["payload"]
    errors = payload if message["type"] == "error" else payload["errors"]
    assert errors[0]["extensions"]["code"] == "UNAUTHORIZED"
