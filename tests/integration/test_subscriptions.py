"""Subscriptions over WebSocket against real servers, with an independent protocol client."""

from __future__ import annotations

import asyncio
import signal
import socket
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


def _mutate(
    url: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def _create(url: str, title: str, token: str | None = None) -> str:
    data = _mutate(url, CREATE, {"i": {"title": title, "content": "c", "author": "alice"}}, token)
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


async def test_a_bad_authorization_header_is_refused_at_the_handshake(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(server_factory, tmp_path)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with SubscriptionClient(
            _ws_url(server), headers={"Authorization": "Bearer not.a.token"}, init=False
        ):
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


# --- Authentication in connection_init (browsers cannot set headers on the upgrade) -----------

SECRET = "subscription-test-hs256-Secret-0123456789"
NOTE_CREATED = "subscription { noteCreated { id title } }"


def _token(subject: str = "alice", lifetime: float = 300) -> str:
    return jwt.encode({"sub": subject, "exp": int(time.time() + lifetime)}, SECRET, "HS256")


def _token_server(server_factory: ServerFactory, tmp_path: Path, **env: str) -> Any:
    """Tokens only, as in production: no demo user, an HS256 key."""
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_AUTH__DEMO_USER": "",
            "PCF_AUTH__HS256_SECRET": SECRET,
            **env,
        }
    )
    server.wait_until_ready()
    return server


async def _sees_a_create(client: SubscriptionClient, server: Any, token: str) -> None:
    await client.subscribe("1", NOTE_CREATED)
    await _settle()
    note_id = await asyncio.to_thread(_create, server.url, "seen", token)
    assert await client.next_data() == ("1", {"noteCreated": {"id": note_id, "title": "seen"}})


@pytest.mark.parametrize(
    "shape",
    [
        lambda t: {"Authorization": f"Bearer {t}"},
        lambda t: {"authorization": f"Bearer {t}"},
        lambda t: {"Authorization": t},
        lambda t: {"authorization": t},
        lambda t: {"authToken": t},
        lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
        lambda t: {"headers": {"authorization": t}},
    ],
    ids=[
        "Authorization-bearer",
        "authorization-bearer",
        "Authorization-bare",
        "authorization-bare",
        "authToken",
        "headers.Authorization",
        "headers.authorization",
    ],
)
async def test_a_token_in_connection_init_authenticates_the_socket(
    server_factory: ServerFactory, tmp_path: Path, shape: Any
) -> None:
    server = _token_server(server_factory, tmp_path)
    token = _token("alice")
    async with SubscriptionClient(_ws_url(server), init_payload=shape(token)) as client:
        await _sees_a_create(client, server, token)


async def test_the_payload_identity_is_the_socket_caller_for_authorization(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """alice's note reaches alice's socket, not bob's: each socket acts as its payload's token."""
    server = _token_server(server_factory, tmp_path)
    alice, bob = _token("alice"), _token("bob")
    async with (
        SubscriptionClient(_ws_url(server), init_payload={"authToken": alice}) as as_alice,
        SubscriptionClient(_ws_url(server), init_payload={"authToken": bob}) as as_bob,
    ):
        await as_bob.subscribe("1", NOTE_CREATED)
        await _sees_a_create(as_alice, server, alice)
        with pytest.raises(TimeoutError):
            await as_bob.receive(within=1.0)


async def test_legacy_graphql_ws_authenticates_with_a_payload_token(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(server_factory, tmp_path)
    token = _token("alice")
    async with SubscriptionClient(
        _ws_url(server), LEGACY_WS, init_payload={"authToken": token}
    ) as client:
        await _sees_a_create(client, server, token)


async def test_the_upgrade_header_still_authenticates_the_socket(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(server_factory, tmp_path)
    token = _token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with SubscriptionClient(_ws_url(server), headers=headers) as client:
        await _sees_a_create(client, server, token)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"authToken": ""},
        {"authToken": "not.a.token"},
        {"Authorization": "Basic YWxpY2U6cw=="},
        {"authToken": 42},
        {"authToken": jwt.encode({"sub": "alice", "exp": 1}, SECRET, "HS256")},
        {
            "authToken": jwt.encode(
                {"sub": "alice", "exp": 2**31}, "another-hs256-secret-0123456789-abcdefgh"
            )
        },
    ],
    ids=["no-token", "empty", "malformed", "not-bearer", "not-a-string", "expired", "forged"],
)
async def test_connection_init_without_a_valid_token_closes_with_4403(
    server_factory: ServerFactory, tmp_path: Path, payload: dict[str, Any]
) -> None:
    server = _token_server(server_factory, tmp_path)
    async with SubscriptionClient(_ws_url(server), init=False) as client:
        await client.connection_init(payload)
        code, messages = await client.closed()
    assert (code, messages) == (4403, [])
    refusals = server.wait_for_log("websocket refused")
    assert [line["code"] for line in refusals] == ["UNAUTHORIZED"]
    assert not [line for line in server.log_lines() if line["level"] in ("ERROR", "FATAL")]


async def test_legacy_graphql_ws_without_a_token_gets_connection_error(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(server_factory, tmp_path)
    async with SubscriptionClient(_ws_url(server), LEGACY_WS, init=False) as client:
        await client.connection_init({"authToken": "not.a.token"})
        code, messages = await client.closed()
    assert [message["type"] for message in messages] == ["connection_error"]
    assert messages[0]["payload"]["extensions"]["code"] == "UNAUTHORIZED"
    assert code == 1011  # Strawberry's close after connection_error


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_nothing_can_be_subscribed_before_connection_init(
    server_factory: ServerFactory, tmp_path: Path, protocol: str
) -> None:
    server = _token_server(server_factory, tmp_path)
    async with SubscriptionClient(_ws_url(server), protocol, init=False) as client:
        await client.subscribe("1", NOTE_CREATED)
        code, messages = await client.closed()
    assert (code, messages) == (4401, [])


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_no_connection_init_within_the_timeout_closes_with_4408(
    server_factory: ServerFactory, tmp_path: Path, protocol: str
) -> None:
    server = _token_server(
        server_factory, tmp_path, PCF_SUBSCRIPTIONS__CONNECTION_INIT_TIMEOUT="0.5"
    )
    async with SubscriptionClient(_ws_url(server), protocol, init=False) as client:
        started = time.monotonic()
        code, messages = await client.closed(within=5)
        waited = time.monotonic() - started
    assert (code, messages) == (4408, [])
    assert 0.4 < waited < 3


async def test_a_socket_initialised_in_time_outlives_the_init_timeout(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(
        server_factory, tmp_path, PCF_SUBSCRIPTIONS__CONNECTION_INIT_TIMEOUT="0.5"
    )
    token = _token("alice")
    async with SubscriptionClient(
        _ws_url(server), LEGACY_WS, init_payload={"authToken": token}
    ) as client:
        await asyncio.sleep(1.0)
        await _sees_a_create(client, server, token)


async def test_a_payload_token_that_expires_ends_the_subscription(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = _token_server(server_factory, tmp_path)
    token = _token("alice", lifetime=2)
    async with SubscriptionClient(_ws_url(server), init_payload={"authToken": token}) as client:
        await client.subscribe("1", NOTE_CREATED)
        message = await client.receive(within=10)
    assert message["type"] in ("next", "error"), message
    payload = message["payload"]
    errors = payload if message["type"] == "error" else payload["errors"]
    assert errors[0]["extensions"]["code"] == "UNAUTHORIZED"


async def test_budgets_are_spent_by_the_payload_identity(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The budget follows the token's subject across sockets, not the socket or its address."""
    server = _token_server(server_factory, tmp_path)
    search = '{ searchNotes(query: "x") { id } }'

    async def code_of(client: SubscriptionClient, operation_id: str) -> str:
        await client.subscribe(operation_id, search)
        message = await client.receive()
        if message["type"] == "error":
            return str(message["payload"][0]["extensions"]["code"])
        errors = message["payload"].get("errors")
        assert (await client.receive())["type"] == "complete"
        return str(errors[0]["extensions"]["code"]) if errors else "ok"

    alice = {"authToken": _token("alice")}
    async with SubscriptionClient(_ws_url(server), init_payload=alice) as client:
        assert [await code_of(client, str(index)) for index in range(10)] == ["ok"] * 10
    async with (
        SubscriptionClient(_ws_url(server), init_payload=alice) as again,
        SubscriptionClient(_ws_url(server), init_payload={"authToken": _token("bob")}) as bob,
    ):
        assert await code_of(again, "a") == "RATE_LIMITED"
        assert await code_of(bob, "b") == "ok"


# --- The upgrade's Origin ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://localhost.evil.example", "null", "https://app.example.com.x"],
)
async def test_a_browser_origin_that_is_not_allowed_is_refused_at_the_upgrade(
    server_factory: ServerFactory, tmp_path: Path, origin: str
) -> None:
    server = _token_server(
        server_factory, tmp_path, PCF_CORS__ALLOW_ORIGINS="https://app.example.com"
    )
    headers = {"Origin": origin, "Authorization": f"Bearer {_token('alice')}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with SubscriptionClient(_ws_url(server), headers=headers, init=False):
            pass
    assert refused.value.response.status_code == 403
    refusals = server.wait_for_log("websocket refused")
    assert [(line["code"], line["origin"]) for line in refusals] == [("FORBIDDEN", origin)]


@pytest.mark.parametrize(
    "origin", ["https://app.example.com", "http://localhost:3000", "http://127.0.0.1:5173"]
)
async def test_an_allowed_browser_origin_opens_the_socket(
    server_factory: ServerFactory, tmp_path: Path, origin: str
) -> None:
    # Exact origins from the settings; the development profile's pattern for the others.
    server = _token_server(
        server_factory, tmp_path, PCF_CORS__ALLOW_ORIGINS="https://app.example.com"
    )
    token = _token("alice")
    async with SubscriptionClient(
        _ws_url(server), headers={"Origin": origin}, init_payload={"authToken": token}
    ) as client:
        await _sees_a_create(client, server, token)


async def test_without_an_allowed_pattern_every_browser_origin_is_refused(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Without the development pattern (none configured) every browser origin is refused, and
    clients that send no Origin still connect."""
    server = _token_server(server_factory, tmp_path, PCF_CORS__ALLOW_ORIGIN_REGEX="^$")
    token = _token("alice")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with SubscriptionClient(
            _ws_url(server), headers={"Origin": "http://localhost:3000"}, init=False
        ):
            pass
    assert refused.value.response.status_code == 403
    async with SubscriptionClient(_ws_url(server), init_payload={"authToken": token}) as client:
        await _sees_a_create(client, server, token)


async def test_a_subscriber_that_stops_reading_is_ended_with_subscriber_too_slow(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/n.db",
            "PCF_SUBSCRIPTIONS__QUEUE_EVENTS": "4",
            "PCF_RATE_LIMIT__MUTATIONS": "1000/minute",
        }
    )
    server.wait_until_ready()
    large = "😀" * 10_000  # 120 kB of JSON per event (as \ud83d\ude00)
    # A small receive buffer (no autotuning), one message read ahead and no compression: once
    # the server's send buffer (at most 4 MiB) is full too, its queue for this subscriber fills.
    small = socket.create_connection(("127.0.0.1", server.port))
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    async with (
        httpx.AsyncClient(base_url=server.url) as http,
        SubscriptionClient(
            _ws_url(server), connect_options={"sock": small, "max_queue": 1, "compression": None}
        ) as idle,
        SubscriptionClient(_ws_url(server)) as reading,
    ):
        await idle.subscribe("1", "subscription { noteCreated { id content } }")
        await reading.subscribe("1", "subscription { noteCreated { id } }")
        await _settle()
        created = []
        for index in range(80):  # `idle` reads nothing meanwhile: its socket backs up
            response = await http.post(
                "/graphql",
                json={
                    "query": CREATE,
                    "variables": {"i": {"title": f"n{index}", "content": large, "author": "alice"}},
                },
            )
            created.append(response.json()["data"]["createNote"]["id"])
            assert await reading.next_data() == ("1", {"noteCreated": {"id": created[-1]}})

        delivered = []
        while (message := await idle.receive())["type"] == "next" and "errors" not in message[
            "payload"
        ]:
            delivered.append(message["payload"]["data"]["noteCreated"]["id"])
        (error,) = message["payload"]["errors"]
        assert error["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
        assert await idle.receive() == {"id": "1", "type": "complete"}
        # What was queued arrived, in order, then the end: a prefix, never a gap.
        assert delivered == created[: len(delivered)]
        assert len(delivered) < len(created)
    line = next(
        line
        for line in server.log_lines()
        if line["message"] == "dropped an events subscriber that fell behind"
    )
    assert line["backend"] == "subscriptions"
    assert line["queue_size"] == 4
