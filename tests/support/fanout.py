"""Subscription fan-out driven from outside: many graphql-transport-ws subscribers of a running
``pcf-api serve``, notes created over HTTP meanwhile, and an unrelated query timed throughout.

Every delivery is a real ``next`` message read off a real socket and counted per subscription,
so a result says exactly who missed what. The client is light on purpose (``websockets`` and
JSON, no protocol library): a thousand subscribers fit in one test process.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from typing import Any

import httpx
import jwt
import websockets
from websockets.typing import Subprotocol

HS256_SECRET = "fan-out-test-Secret-0123456789-abcdefghij"
SUBSCRIBE = "subscription { noteCreated { id } }"
CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"
PROBE = "{ notes(first: 5) { edges { node { id } } } }"
PROBE_USER = "probe"


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": time.time() + 3600}, HS256_SECRET, "HS256")


def server_environment(database_url: str) -> dict[str, str]:
    """The production profile on ``database_url``, with room for a thousand subscriptions of
    one user (the per-client limits are otherwise the defaults' business, not this test's)."""
    return {
        "PCF_ENVIRONMENT": "production",
        "PCF_LOG__FORMAT": "json",
        "PCF_LOG__LEVEL": "WARNING",
        "PCF_DATABASE__URL": database_url,
        "PCF_DATABASE__AUTO_MIGRATE": "true",
        "PCF_AUTH__HS256_SECRET": HS256_SECRET,
        "PCF_SERVER__DRAIN_SECONDS": "0.2",
        "PCF_GRAPHQL__MAX_SUBSCRIPTIONS_PER_CLIENT": "1000",
        "PCF_RATE_LIMIT__SUBSCRIPTIONS": "2000/minute",
        "PCF_RATE_LIMIT__MUTATIONS": "2000/minute",
        "PCF_RATE_LIMIT__QUERIES": "100000/minute",
    }


@dataclass
class Socket:
    """One WebSocket of ``user`` carrying ``count`` subscriptions of ``noteCreated``."""

    user: str
    count: int
    received: dict[str, list[str]] = field(default_factory=dict)
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)
    """Messages that ended a subscription (an error result, ``error``, ``complete``), or the
    close of the socket."""
    connection: Any = None

    async def open(self, url: str) -> None:
        self.connection = await websockets.connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"Authorization": f"Bearer {token(self.user)}"},
            max_queue=None,
            open_timeout=30,
        )
        await self.connection.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(self.connection.recv(), 30))
        if ack.get("type") != "connection_ack":
            raise AssertionError(f"no connection_ack: {ack}")
        for index in range(self.count):
            self.received[str(index)] = []
            message = {"id": str(index), "type": "subscribe", "payload": {"query": SUBSCRIBE}}
            await self.connection.send(json.dumps(message))

    async def read(self) -> None:
        """Record every delivery until the socket closes."""
        try:
            async for raw in self.connection:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next" and "errors" not in message["payload"]:
                    note_id = message["payload"]["data"]["noteCreated"]["id"]
                    self.received[message["id"]].append(note_id)
                    self.arrivals.append((note_id, time.monotonic()))
                elif kind == "ping":
                    await self.connection.send(json.dumps({"type": "pong"}))
                elif kind != "pong":
                    self.ended.append(message)
        except websockets.ConnectionClosed as closed:
            self.ended.append({"type": "closed", "code": closed.code})
        else:
            if self.connection.close_code not in (None, 1000):
                self.ended.append({"type": "closed", "code": self.connection.close_code})

    def has(self, note_ids: Sequence[str]) -> bool:
        """Every subscription holds ``note_ids`` (or more) already."""
        return all(len(ids) >= len(note_ids) for ids in self.received.values())


@dataclass
class FanOutResult:
    subscribers: int
    creates: int
    failed_creates: list[str]
    missing: int
    """Deliveries that should have arrived and did not."""
    wrong: int
    """Subscriptions whose deliveries are not exactly their user's notes in creation order."""
    ended: list[dict[str, Any]]
    probe_latencies: list[float]
    delivery_latencies: list[float]
    seconds: float

    @property
    def delivered(self) -> int:
        return len(self.delivery_latencies)

    @property
    def probe_p99(self) -> float:
        return percentile(self.probe_latencies, 0.99)

    @property
    def delivery_p99(self) -> float:
        return percentile(self.delivery_latencies, 0.99)

    @property
    def events_per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        failures = [text[:120] for text in self.failed_creates[:2]]
        ends = [str(message)[:160] for message in self.ended[:2]]
        return (
            f"{self.subscribers} subscribers, {self.creates} creates: "
            f"{len(self.failed_creates)} creates failed {failures}, "
            f"{self.delivered} delivered, {self.missing} missing, {self.wrong} subscriptions "
            f"wrong, {len(self.ended)} ended by the server {ends}, "
            f"probe p99 {self.probe_p99 * 1000:.0f} ms over {len(self.probe_latencies)}, "
            f"delivery p99 {self.delivery_p99 * 1000:.0f} ms, "
            f"{self.events_per_second:.0f} events/s in {self.seconds:.1f} s"
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


async def _create(http: httpx.AsyncClient, user: str, title: str) -> str:
    response = await http.post(
        "/graphql",
        json={
            "query": CREATE,
            "variables": {"i": {"title": title, "content": "c", "author": user}},
        },
        headers={"Authorization": f"Bearer {token(user)}"},
    )
    body = response.json()
    if response.status_code != 200 or "errors" in body:
        raise RuntimeError(json.dumps(body.get("errors", body))[:300])
    return str(body["data"]["createNote"]["id"])


async def _wait_until(condition: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _probe(base_url: str, stop: EventType, results: Connection) -> None:
    """Time the unrelated query until ``stop`` is set, then send the latencies.

    It runs in a process of its own: in the test's process it would also time the client's
    own work of reading a thousand subscriptions, not only the server's answer.
    """
    headers = {"Authorization": f"Bearer {token(PROBE_USER)}"}
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while not stop.is_set():
            started = time.monotonic()
            response = http.post("/graphql", json={"query": PROBE}, headers=headers)
            latencies.append(time.monotonic() - started)
            if response.status_code != 200 or "errors" in response.json():
                results.send(f"the unrelated query failed: {response.text[:300]}")
                return
            time.sleep(0.02)
    results.send(latencies)


async def run_fan_out(
    base_url: str,
    *,
    users: int,
    subscribers: int,
    creates: int,
    per_socket: int = 1,
    deliver_within: float = 30.0,
) -> FanOutResult:
    """``subscribers`` subscriptions spread evenly over ``users`` (``per_socket`` on each
    socket); once each has received a first note of its user, ``creates`` notes are created,
    spread evenly over the users, each user's one after another. Waits ``deliver_within``
    seconds after the last create for the deliveries."""
    names = [f"user{index}" for index in range(users)]
    ws_url = base_url.replace("http://", "ws://") + "/graphql"
    sockets = [
        Socket(names[index % users], per_socket) for index in range(subscribers // per_socket)
    ]
    opening = asyncio.Semaphore(50)

    async def open_socket(socket: Socket) -> None:
        async with opening:
            await socket.open(ws_url)

    await asyncio.gather(*(open_socket(socket) for socket in sockets))
    readers = [asyncio.create_task(socket.read()) for socket in sockets]
    limits = httpx.Limits(max_connections=users + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        # Every subscription is live once it has seen its user's first note.
        first = {name: [await _create(http, name, "first")] for name in names}
        if not await _wait_until(lambda: all(s.has(first[s.user]) for s in sockets), 60):
            missing = sum(1 for s in sockets for ids in s.received.values() if not ids)
            ended = [message for s in sockets for message in s.ended]
            raise AssertionError(f"{missing} subscriptions never went live; ended: {ended[:3]}")
        for socket in sockets:
            socket.arrivals.clear()

        created: dict[str, list[str]] = {name: [] for name in names}
        sent_at: dict[str, float] = {}
        failed: list[str] = []

        async def write(name: str, count: int) -> None:
            for index in range(count):
                started = time.monotonic()
                try:
                    note_id = await _create(http, name, f"n{index}")
                except (RuntimeError, httpx.HTTPError) as error:
                    failed.append(str(error))
                    continue
                sent_at[note_id] = started
                created[name].append(note_id)

        processes = multiprocessing.get_context("spawn")
        stop = processes.Event()
        received, sent = processes.Pipe(duplex=False)
        probe = processes.Process(target=_probe, args=(base_url, stop, sent), daemon=True)
        probe.start()
        started = time.monotonic()
        share, extra = divmod(creates, users)
        await asyncio.gather(
            *(write(name, share + (index < extra)) for index, name in enumerate(names))
        )

        def expected(socket: Socket) -> list[str]:
            return first[socket.user] + created[socket.user]

        await _wait_until(lambda: all(s.has(expected(s)) for s in sockets), deliver_within)
        seconds = time.monotonic() - started
        stop.set()
        latencies = await asyncio.to_thread(received.recv)
        probe.join()
        if isinstance(latencies, str):
            raise AssertionError(latencies)
    for socket in sockets:
        await socket.connection.close()
    await asyncio.gather(*readers)
    missing = sum(
        max(len(expected(s)) - len(ids), 0) for s in sockets for ids in s.received.values()
    )
    wrong = sum(1 for s in sockets for ids in s.received.values() if ids != expected(s))
    return FanOutResult(
        subscribers=subscribers,
        creates=creates,
        failed_creates=failed,
        missing=missing,
        wrong=wrong,
        ended=[message for socket in sockets for message in socket.ended],
        probe_latencies=latencies,
        delivery_latencies=[
            at - sent_at[note_id]
            for socket in sockets
            for note_id, at in socket.arrivals
            if note_id in sent_at
        ],
        seconds=seconds,
    )
