"""HTTP/1.1 over a bare asyncio socket, for tests of what a server does with the connection
itself: oversized or never-ending heads, silence, keep-alive and `Connection: close`.

Requests and responses go through h11 (an independent HTTP/1.1 implementation); ``send_raw``
writes bytes no well-behaved client would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import h11


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this response."""
        tokens = self.headers.get("connection", "").lower().split(",")
        return "close" in (token.strip() for token in tokens)


class RawConnection:
    """One TCP connection to ``host:port``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self, target: str = "/health", headers: list[tuple[str, str]] | None = None
    ) -> Reply:
        """Send a GET and read its response; the connection is reusable unless ``Reply.closes``."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        request = h11.Request(
            method="GET", target=target, headers=[("Host", "test"), *(headers or [])]
        )
        await self.send_raw(self.h11.send(request) + self.h11.send(h11.EndOfMessage()))
        return await self._read_reply()

    async def _read_reply(self) -> Reply:
        response: h11.Response | None = None
        body = b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("the server closed before its response ended")
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                headers = {name.decode(): value.decode() for name, value in response.headers}
                return Reply(response.status_code, headers, body)

    async def read_until_closed(self, timeout: float) -> bytes:
        """Everything the server sends until it closes the connection; ``TimeoutError`` if it
        keeps it open longer than ``timeout``."""
        received = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return received
                if not data:
                    return received
                received += data

    def close(self) -> None:
        self.writer.close()


def status_of(raw_response: bytes) -> int:
    """The status code of a response read as bytes."""
    status_line = raw_response.split(b"\r\n", 1)[0]
    return int(status_line.split(b" ")[1])


def resident_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
