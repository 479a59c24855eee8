"""What a real `pcf-api serve` does with hostile connections: heads too large, heads that never
end, silence, and more connections than it takes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.rawhttp import RawConnection, resident_bytes, status_of
from support.servers import DEV_JSON, ServerProcess, start_server

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
MAX_CONNECTIONS = 5
LIMITS = {
    **DEV_JSON,
    "PCF_SERVER__MAX_HEADER_LINE_BYTES": "16384",
    "PCF_SERVER__MAX_HEADER_BYTES": "65536",
    "PCF_SERVER__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "PCF_SERVER__IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
}
MiB = 1_048_576


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: each test leaves no connection behind."""
    process = start_server(tmp_path_factory.mktemp("limits"), LIMITS)
    process.wait_until_serving()
    yield process
    process.terminate()
    assert process.wait(timeout=30) == 0


async def _refused_head(port: int, head: bytes) -> bytes:
    connection = await RawConnection.open(port)
    await connection.send_raw(head)
    try:
        return await connection.read_until_closed(timeout=5)
    finally:
        connection.close()


def test_a_header_longer_than_the_line_limit_gets_431_and_the_connection_closed(
    server: ServerProcess,
) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    answer = asyncio.run(_refused_head(server.port, head))
    assert status_of(answer) == 431
    assert b"connection: close" in answer.lower()


def test_headers_larger_than_the_head_limit_together_get_431(server: ServerProcess) -> None:
    headers = b"".join(b"X-Part-%d: " % i + b"b" * 15_000 + b"\r\n" for i in range(5))
    head = b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"
    assert status_of(asyncio.run(_refused_head(server.port, head))) == 431


def test_a_request_line_longer_than_the_line_limit_gets_414(server: ServerProcess) -> None:
    head = b"GET /health?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    assert status_of(asyncio.run(_refused_head(server.port, head))) == 414


def test_headers_within_the_limits_are_served_and_the_connection_kept(
    server: ServerProcess,
) -> None:
    async def scenario() -> tuple[int, int, bool]:
        connection = await RawConnection.open(server.port)
        first = await connection.request(headers=[("X-Token", "t" * 15_000)])
        second = await connection.request()
        connection.close()
        return first.status, second.status, first.closes

    assert asyncio.run(scenario()) == (200, 200, False)


async def _flood(port: int, size: int) -> bool:
    """Send a header of ``size`` bytes that never ends; True if the server cut it off first."""
    connection = await RawConnection.open(port)
    try:
        await connection.send_raw(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Flood: ")
        chunk = b"f" * 65536
        for _ in range(size // len(chunk)):
            await connection.send_raw(chunk)
    except ConnectionError:
        return True
    try:
        await connection.read_until_closed(timeout=5)
    except TimeoutError:
        return False
    finally:
        connection.close()
    return True


def test_twenty_never_ending_16_mib_headers_are_cut_off_without_growing_memory(
    server: ServerProcess,
) -> None:
    before = resident_bytes(server.process.pid)

    async def flood() -> tuple[list[bool], int]:
        # The memory is measured while every flood is still connected or just cut off.
        floods = [asyncio.ensure_future(_flood(server.port, 16 * MiB)) for _ in range(20)]
        done = await asyncio.gather(*floods)
        return done, resident_bytes(server.process.pid)

    cut_off, during = asyncio.run(flood())
    assert cut_off == [True] * 20
    assert during - before < 32 * MiB


def test_a_head_that_does_not_finish_in_time_gets_408_and_is_closed(
    server: ServerProcess,
) -> None:
    async def slowloris() -> tuple[bytes, float]:
        connection = await RawConnection.open(server.port)
        started = asyncio.get_running_loop().time()
        await connection.send_raw(b"GET /health HTTP/1.1\r\n")

        async def trickle() -> None:
            for i in range(100):
                await asyncio.sleep(0.1)
                await connection.send_raw(b"X-%d: 1\r\n" % i)

        trickling = asyncio.ensure_future(trickle())
        try:
            answer = await connection.read_until_closed(timeout=HEADER_TIMEOUT + 3)
        finally:
            trickling.cancel()
            connection.close()
        return answer, asyncio.get_running_loop().time() - started

    answer, after = asyncio.run(slowloris())
    assert status_of(answer) == 408
    assert HEADER_TIMEOUT - 0.1 <= after < HEADER_TIMEOUT + 1


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    server: ServerProcess,
) -> None:
    async def silent() -> tuple[bytes, float]:
        connection = await RawConnection.open(server.port)
        started = asyncio.get_running_loop().time()
        try:
            answer = await connection.read_until_closed(timeout=IDLE_TIMEOUT + 3)
        finally:
            connection.close()
        return answer, asyncio.get_running_loop().time() - started

    answer, after = asyncio.run(silent())
    assert answer == b""
    assert IDLE_TIMEOUT - 0.1 <= after < IDLE_TIMEOUT + 1


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(server: ServerProcess) -> None:
    async def kept() -> tuple[int, bytes, float]:
        connection = await RawConnection.open(server.port)
        reply = await connection.request()
        answered = asyncio.get_running_loop().time()
        try:
            rest = await connection.read_until_closed(timeout=IDLE_TIMEOUT + 3)
        finally:
            connection.close()
        return reply.status, rest, asyncio.get_running_loop().time() - answered

    status, rest, after = asyncio.run(kept())
    assert (status, rest) == (200, b"")
    assert IDLE_TIMEOUT - 0.1 <= after < IDLE_TIMEOUT + 1


def test_connections_beyond_the_cap_get_503_until_one_is_free(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, {**DEV_JSON, "PCF_SERVER__MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    )
    try:
        server.wait_until_serving()

        async def scenario() -> tuple[list[int], int, int]:
            held = [await RawConnection.open(server.port) for _ in range(MAX_CONNECTIONS)]
            statuses = [(await connection.request()).status for connection in held]
            extra = await RawConnection.open(server.port)
            refused = status_of(await extra.read_until_closed(timeout=5))
            extra.close()
            held.pop().close()
            await asyncio.sleep(0.2)  # the server sees the close
            again = await RawConnection.open(server.port)
            served = (await again.request()).status
            for connection in [*held, again]:
                connection.close()
            return statuses, refused, served

        statuses, refused, served = asyncio.run(scenario())
        assert statuses == [200] * MAX_CONNECTIONS
        assert refused == 503
        assert served == 200
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
