"""The floor for bench/graphql.py: a bare ASGI app under the same uvicorn that replays the
answers the tutorial baseline gave, without GraphQL, a database or any middleware.

What is left is the cost of HTTP, uvicorn and the event loop: no GraphQL server in Python can
be faster on this machine. ``BENCH_FLOOR_ANSWERS`` names a JSON file ``{"notes": …, "note": …}``
(written by bench/graphql.py from verified answers); a request whose body holds ``notes(`` gets
the first, any other the second, so the benchmark's answer checks pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

ANSWERS = orjson.loads(Path(os.environ["BENCH_FLOOR_ANSWERS"]).read_bytes())
NOTES_BODY = orjson.dumps(ANSWERS["notes"])
NOTE_BODY = orjson.dumps(ANSWERS["note"])


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


NOTES_HEADERS = _headers(NOTES_BODY)
NOTE_HEADERS = _headers(NOTE_BODY)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup: nothing to start
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    request = b""
    more = True
    while more:
        message = await receive()
        request += message.get("body", b"")
        more = message.get("more_body", False)
    body, headers = (
        (NOTES_BODY, NOTES_HEADERS) if b"notes(" in request else (NOTE_BODY, NOTE_HEADERS)
    )
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
