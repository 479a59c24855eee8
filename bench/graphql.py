"""Benchmark pcf-api's GraphQL notes queries against its peers in the same run.

    .venv/bin/python bench/graphql.py [--duration 10] [--connections 50]
        [--databases sqlite,postgres] [--peers strawberry-cached,yoga,floor] [--repeat 3]
        [--rate 300] [--log-level INFO] [--profile DIR] [--jwt] [--observability]

For each database (a fresh SQLite file; a fresh PostgreSQL database, created and dropped here)
with 1 000 seeded notes, each round starts, one after the other and one process each on
127.0.0.1, the tutorial baseline (bench/baseline_app.py: ``strawberry.asgi.GraphQL`` on
Starlette, SQLAlchemy async, no caching), then in turns the other peers (bench/peers.py:
Strawberry with its documented parser and validation caches, GraphQL Yoga 5 on Node, and the
floor, a bare ASGI app replaying verified answers) and ``pcf-api serve``. Each server's answers
are checked before it is measured and again after (no errors, 10 edges, totalCount 1000, the same
note ids as the baseline), then:

* closed loop: ``wrk -t2 -cN -dDs --latency`` (POST from a Lua script) on the notes query and on
  ``note(id)``, after a 2 s warm-up of each; for pcf-api, the requests its own access log saw
  take over 250 ms are counted (the stall check of issue 20: that count is 0 and p99 is at most
  3 times p50);
* open loop: a constant RATE requests/s for D s on the notes query. Request i is due at
  ``start + i / RATE`` whatever happened before; it goes out on an idle keep-alive connection, or
  a new one (at most 256), and its latency runs from when it was *due* to the end of the
  response, so time spent queueing (in the client, the kernel or the server) counts. wrk cannot
  do this: a closed loop sends less when the server slows down (coordinated omission).

The report gives each server's requests/s against every peer's in the same round (median over
rounds) and says whether pcf-api meets the issue's targets (0.5x Yoga, 2x cached Strawberry, no
stall).

pcf-api runs with the development profile, the demo identity (user ``reader``, who may read every
seeded note, so every request is authorized against the relationship rows), JSON logs at INFO
(production's level: one access and one audit line per request, written to a file here), rate
limits off (wrk is one client far past any budget), and its defaults otherwise (document cache on;
no response cache exists). With ``--jwt`` another server, ``pcf-api+jwt``, takes an RS256 bearer
token (keys from a local JWKS file) instead of the demo identity: the cost of authentication.
With ``--observability``, three more: metrics off, and tracing on at sample ratios 0.1 and 1.0
(exporting to an OTLP sink in this process) — the cost of metrics and tracing.

With ``--profile DIR`` a py-spy profile of pcf-api is recorded during an extra wrk run on the
notes query (``DIR/pcf-api-<db>.txt``, raw collapsed stacks) and summarised by component.

Everything is bounded in time; servers (their whole process groups) are stopped on exit, on
Ctrl-C and on errors. Needs wrk (apt-get install wrk), node and npm for Yoga (``npm ci`` runs in
bench/yoga the first time) and, for PostgreSQL, a server at 127.0.0.1:5432 that lets
``postgres`` in without a password.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
# This file is named graphql.py: keep its directory off the path so that `import graphql` (here
# or in anything imported later) finds graphql-core, not this script.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for the bench package when run as a script

from bench import peers  # noqa: E402 - needs the path above

BIN = Path(sys.executable).parent
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
NOTES = 1000
BENCH_USER = "reader"  # may read every seeded note (see seed); the demo identity or the token's sub
WARMUP_SECONDS = 2
MAX_OPEN_LOOP_CONNECTIONS = 256
OPEN_LOOP_TIMEOUT = 5.0
WRK_TIMEOUT = 10
REUSE_SECONDS = 3.0
SLOW_LOGGED_MS = 250.0  # issue 20: no request over this in pcf-api's own access log
STALL_RATIO = 3.0  # issue 20: p99 at most this many times p50 in the closed loop

NOTES_QUERY = "{ notes(limit: 10) { edges { node { id title author } } totalCount } }"
NOTE_QUERY = "query Note($id: ID!) { note(id: $id) { id title author } }"


# --- database ------------------------------------------------------------------------------


@dataclass
class Database:
    name: str  # sqlite | postgres
    url: str  # async URL, as both servers take it
    sync_url: str  # for seeding
    note_id: str = ""  # a seeded note, for note(id)


def seed(database: Database) -> None:
    """Migrate with ``pcf-api migrate`` (the schema pcf-api uses), then insert the notes."""
    env = {
        **clean_env(),
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__LEVEL": "WARNING",
        "PCF_DATABASE__URL": database.url,
    }
    subprocess.run([str(BIN / "pcf-api"), "migrate"], env=env, check=True, timeout=60)
    from sqlalchemy import create_engine, insert, text  # noqa: PLC0415 - only the seeding needs it

    from pcf_api.store.models import new_note_id  # noqa: PLC0415
    from pcf_api.store.tables import note_relationships, notes  # noqa: PLC0415

    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    for index in range(NOTES):
        created = start + timedelta(minutes=index)
        rows.append(
            {
                "id": new_note_id(),
                "title": f"Note number {index}",
                "content": f"Body of note {index}. " + "Lorem ipsum dolor sit amet. " * 6,
                "author": f"author-{index % 20}",
                "created_at": created,
                "updated_at": created,
            }
        )
    # Each note's author owns it, and the user the benchmark reads as may read every note.
    relationships = [
        {"note_id": row["id"], "subject": subject, "relation": relation}
        for row in rows
        for subject, relation in ((row["author"], "owner"), (BENCH_USER, "reader"))
    ]
    engine = create_engine(database.sync_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(notes), rows)
            connection.execute(insert(note_relationships), relationships)
            if database.name == "postgres":
                # Statistics, as a database in service has: without them the planner guesses.
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    database.note_id = rows[NOTES // 2]["id"]


@contextlib.contextmanager
def sqlite_database(directory: Path) -> Iterator[Database]:
    path = directory / "notes.db"
    yield Database("sqlite", f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}")


@contextlib.contextmanager
def postgres_database() -> Iterator[Database]:
    import psycopg  # noqa: PLC0415 - only needed for PostgreSQL

    name = f"pcf_bench_{os.getpid()}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield Database(
            "postgres",
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        )
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def seeded_database(name: str, directory: Path) -> Iterator[Database]:
    """``sqlite`` (a file in ``directory``) or ``postgres``, seeded."""
    context = sqlite_database(directory) if name == "sqlite" else postgres_database()
    with context as database:
        seed(database)
        yield database


# --- servers -------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PCF_", "BENCH_"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], log: Path, stdout: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group; stop the group on the way out, whatever happens.

    stdout (pcf-api's log lines) goes to ``stdout`` or /dev/null, stderr to ``log`` for when it
    fails."""
    with log.open("wb") as stderr, contextlib.ExitStack() as files:
        output = files.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def baseline_command(port: int) -> list[str]:
    return peers.command(peers.BASELINE, port)


def graphql_post(
    port: int,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql", json=payload, headers=headers, timeout=5
    )
    return response.status_code, response.json()


def wait_serving(
    process: subprocess.Popen[bytes],
    port: int,
    log: Path,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> None:
    """Until the notes query answers 200 (pcf-api answers 503 until its database is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = log.read_text(errors="replace")
            raise SystemExit(f"server exited with {process.returncode}:\n{stderr[-3000:]}")
        try:
            status, _ = graphql_post(port, NOTES_QUERY, headers=headers)
            if status == 200:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not come up within {timeout:g} s")


def answers(port: int, database: Database, headers: dict[str, str] | None) -> dict[str, Any]:
    """The two benchmarked answers, as the server gave them."""
    _, notes = graphql_post(port, NOTES_QUERY, headers=headers)
    _, note = graphql_post(port, NOTE_QUERY, {"id": database.note_id}, headers)
    return {"notes": notes, "note": note}


def logged_durations(access_log: Path, offset: int) -> list[float]:
    """``duration_ms`` of the /graphql access lines written to ``access_log`` after ``offset``
    (the server writes its log from a thread: the lines of a run's last milliseconds may come a
    little later, which at most misses a few)."""
    with access_log.open("rb") as lines:
        lines.seek(offset)
        durations = []
        for line in lines:
            if b'"duration_ms"' not in line or b'"/graphql"' not in line:
                continue
            with contextlib.suppress(ValueError):
                durations.append(float(orjson.loads(line)["duration_ms"]))
    return durations


def verify(port: int, database: Database, headers: dict[str, str] | None) -> list[str]:
    """One request per query; raise unless the answers are complete and correct."""
    status, body = graphql_post(port, NOTES_QUERY, headers=headers)
    if status != 200 or body.get("errors"):
        raise SystemExit(f"notes query failed: {status} {body}")
    connection = body["data"]["notes"]
    ids = [edge["node"]["id"] for edge in connection["edges"]]
    if len(ids) != 10 or connection["totalCount"] != NOTES:
        raise SystemExit(f"notes query: expected 10 edges and totalCount {NOTES}, got {body}")
    status, body = graphql_post(port, NOTE_QUERY, {"id": database.note_id}, headers)
    if status != 200 or body.get("errors") or body["data"]["note"]["id"] != database.note_id:
        raise SystemExit(f"note query failed: {status} {body}")
    return ids


# --- CPU accounting ------------------------------------------------------------------------
# Two cores are shared by the load generator, the server, the database and whatever else runs.
# Every measurement records where the CPU went, so a figure taken while something else was busy
# shows it; before each measurement the script waits (a bounded time) for the machine to be quiet.

HZ = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.15


def _system_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / HZ  # all but idle and iowait


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime, all threads


def _postgres_seconds() -> dict[int, float]:
    seconds = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    seconds[int(entry.name)] = cpu_seconds(int(entry.name))
            except OSError:
                continue
    return seconds


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class CpuUse:
    """Average cores busy during a measurement: the server, PostgreSQL, the load generator
    (wrk or this script) and everything else."""

    server: float = 0.0
    database: float = 0.0
    client: float = 0.0
    other: float = 0.0


class CpuMeter:
    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.use = CpuUse()

    def __enter__(self) -> CpuMeter:
        self._start = (
            time.monotonic(),
            _system_busy_seconds(),
            cpu_seconds(self.server_pid),
            _postgres_seconds(),
            _own_seconds(),
        )
        return self

    def __exit__(self, *_: object) -> None:
        wall0, busy0, server0, postgres0, own0 = self._start
        wall = time.monotonic() - wall0
        busy = _system_busy_seconds() - busy0
        server = cpu_seconds(self.server_pid) - server0
        postgres = sum(
            seconds - postgres0.get(pid, 0.0) for pid, seconds in _postgres_seconds().items()
        )
        own = _own_seconds() - own0
        self.use = CpuUse(
            server=server / wall,
            database=postgres / wall,
            client=own / wall,
            other=max(busy - server - postgres - own, 0.0) / wall,
        )


def wait_quiet(server_pid: int, limit: float) -> float:
    """Wait until other processes use less than QUIET_CORES, for at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    announced = False
    while True:
        with CpuMeter(server_pid) as meter:
            time.sleep(1)
        other = meter.use.other + meter.use.database
        if other < QUIET_CORES or time.monotonic() >= deadline:
            return other
        if not announced:
            print(
                f"  waiting for a quiet machine ({other:.2f} cores busy elsewhere)",
                file=sys.stderr,
                flush=True,
            )
            announced = True


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: CpuUse = field(default_factory=CpuUse)
    slow_logged: int | None = None
    """Requests over SLOW_LOGGED_MS in the server's own access log during the run (pcf-api)."""
    logged_max_ms: float | None = None


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


# Counts 200 answers that carry GraphQL errors or no data (wrk counts other statuses itself).
WRK_CHECK = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status == 200 and (string.find(body, '"errors"', 1, true)
      or not string.find(body, '"data":{', 1, true)) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("GraphQL errors: %d\\n", total))
end
"""


def wrk_script(
    directory: Path, name: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Path:
    body = orjson.dumps(payload).decode()
    path = directory / f"{name}.lua"
    extra = "".join(f'wrk.headers["{key}"] = "{value}"\n' for key, value in (headers or {}).items())
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + extra + WRK_CHECK
    )
    return path


def run_wrk(port: int, script: Path, duration: int, connections: int) -> WrkResult:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",  # wrk's default (2 s) would drop slow answers from the percentiles
        f"{WRK_TIMEOUT}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/graphql",
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout

    def find(pattern: str) -> str:
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"no {pattern!r} in wrk output:\n{output}")
        return match.group(1)

    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    errors += int(find(r"GraphQL errors: (\d+)"))
    return WrkResult(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"(?m)^\s+50%\s+(\S+)\s*$")),
        p99_ms=_ms(find(r"(?m)^\s+99%\s+(\S+)\s*$")),
        errors=errors,
    )


# --- open loop -----------------------------------------------------------------------------


@dataclass
class OpenLoopResult:
    sent: int
    ok: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    max_dispatch_lag_ms: float = 0.0
    cpu: CpuUse = field(default_factory=CpuUse)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    chunks: list[bytes] = []
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(chunks)
        chunks.append(chunk[:-2])


async def _open_loop(
    port: int, body: bytes, rate: float, duration: float, headers: dict[str, str] | None
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    extra = "".join(f"{key}: {value}\r\n" for key, value in (headers or {}).items()).encode()
    request = (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n" % (port, extra, len(body))
    ) + body
    slots = asyncio.Semaphore(MAX_OPEN_LOOP_CONNECTIONS)
    # Idle keep-alive connections, most recently used last. Both servers close a connection after
    # 5 s without a request; one idle for longer than REUSE_SECONDS is closed here instead of
    # being reused, so the server's close cannot race a new request on it.
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    opened = 0

    async def one(due: float) -> None:
        nonlocal opened
        async with slots:
            try:
                async with asyncio.timeout(OPEN_LOOP_TIMEOUT):
                    while idle and loop.time() - idle[-1][2] > REUSE_SECONDS:
                        idle.pop()[1].close()
                    if idle:
                        reader, writer, _ = idle.pop()
                    else:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        opened += 1
                    try:
                        writer.write(request)
                        status, payload = await _read_response(reader)
                    except BaseException:
                        writer.close()
                        raise
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                errors[type(error).__name__] += 1
                return
            latencies.append(loop.time() - due)
            if status != 200 or b'"errors"' in payload:
                errors[f"HTTP {status}" if status != 200 else "GraphQL errors"] += 1
            idle.append((reader, writer, loop.time()))

    total = int(rate * duration)
    start = loop.time() + 0.05
    tasks = []
    max_lag = 0.0
    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.wait(tasks, timeout=OPEN_LOOP_TIMEOUT + 1)
    for _, writer, _ in idle:
        writer.close()
    unfinished = sum(1 for task in tasks if not task.done())
    return _open_loop_result(
        latencies, errors, unfinished=unfinished, total=total, opened=opened, max_lag=max_lag
    )


def _open_loop_result(
    latencies: list[float],
    errors: Counter[str],
    *,
    unfinished: int,
    total: int,
    opened: int,
    max_lag: float,
) -> OpenLoopResult:
    latencies = sorted(latencies)

    def percentile(fraction: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000

    answered_badly = errors["GraphQL errors"] + sum(
        count for name, count in errors.items() if name.startswith("HTTP")
    )
    errors_total = Counter(errors)
    if unfinished:
        errors_total["unfinished"] += unfinished
    return OpenLoopResult(
        sent=total,
        ok=len(latencies) - answered_badly,
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        max_ms=latencies[-1] * 1000 if latencies else float("nan"),
        errors=errors_total,
        connections=opened,
        max_dispatch_lag_ms=max_lag * 1000,
    )


def open_loop(
    port: int,
    payload: dict[str, Any],
    rate: float,
    duration: float,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    return asyncio.run(_open_loop(port, orjson.dumps(payload), rate, duration, headers))


# --- profile -------------------------------------------------------------------------------

# py-spy frames read "function (package/module.py:line)". First match wins; the leaf frame of a
# sample gives its self time, every frame of it its inclusive time.
COMPONENTS: tuple[tuple[str, str], ...] = (
    (
        "logging (structlog, stdlib logging, our processors)",
        r"\((structlog|logging)/|\(pcf_api/observability/logging",
    ),
    ("JSON encoding (orjson.dumps in http.py _respond)", r"_respond \(pcf_api/graphql/http\.py"),
    ("document cache + query limits", r"\(pcf_api/graphql/(documents|limits)\.py"),
    ("our GraphQL HTTP handler (http.py)", r"\(pcf_api/graphql/http\.py"),
    ("our middleware + trace context", r"\(pcf_api/(middleware|observability/tracecontext)"),
    ("our resolvers, context, DataLoader", r"\(pcf_api/graphql/|\(strawberry/dataloader"),
    ("our store (NoteStore, resilience)", r"\(pcf_api/(store/|resilience)"),
    ("Strawberry (resolver wrappers, scalars)", r"\(strawberry/"),
    ("graphql-core execute", r"\(graphql/"),
    ("SQLAlchemy (+ greenlet bridge)", r"\((sqlalchemy|greenlet)/"),
    ("aiosqlite / sqlite3", r"\((aiosqlite|sqlite3)/"),
    ("asyncpg", r"\(asyncpg/"),
    ("Starlette (routing, Response)", r"\(starlette/"),
    ("uvicorn/uvloop/httptools I/O", r"\((uvicorn|httptools)/|^Runner\.run \(asyncio/runners"),
    ("asyncio (tasks, timeouts) + contextlib", r"\((asyncio|contextlib|contextvars)"),
    ("generated code (dataclass/namedtuple init)", r"\(<string>"),
)


def _blocking_line(module: Any, frame: str, needle: str) -> str | None:
    """The py-spy frame of the line of ``module`` that contains ``needle``."""
    try:
        source = Path(module.__file__).read_text().splitlines()
    except (OSError, TypeError):
        return None
    for number, line in enumerate(source, start=1):
        if needle in line:
            return frame.format(number)
    return None


def _idle_frames() -> set[str]:
    """Worker threads blocked on a queue, which py-spy does not recognise as idle: aiosqlite's
    connection threads in ``tx.get()`` and the default executor's in ``work_queue.get``."""
    import concurrent.futures.thread  # noqa: PLC0415

    import aiosqlite.core  # noqa: PLC0415

    frames = {
        _blocking_line(
            aiosqlite.core, "_connection_worker_thread (aiosqlite/core.py:{})", "tx.get()"
        ),
        _blocking_line(
            concurrent.futures.thread,
            "_worker (concurrent/futures/thread.py:{})",
            "work_queue.get(block=True)",
        ),
    }
    return {frame for frame in frames if frame}


_IDLE_FRAMES = _idle_frames()


def _is_idle(leaf: str) -> bool:
    return leaf in _IDLE_FRAMES


def component(frame: str) -> str:
    for name, pattern in COMPONENTS:
        if re.search(pattern, frame):
            return name
    return "other"


def _parse_stack(line: str) -> tuple[str, list[str], int] | None:
    """(thread kind, frames outermost first, samples) of one raw py-spy line; None if idle."""
    stack, _, count_text = line.rpartition(" ")
    frames = stack.split(";")
    if not stack or _is_idle(frames[-1]):
        return None
    # Threads other than the event loop's are aiosqlite's (one per connection).
    kind = "worker threads" if "(threading.py" in stack else "event loop thread"
    frames = [frame for frame in frames if not frame.startswith(("thread ", "process "))]
    # Drop the start-up frames above the event loop (cli, server, uvicorn's Server.run);
    # a stack that ends in Runner.run is the loop's own C code (uvloop, httptools, sockets).
    for index, frame in enumerate(frames[:-1]):
        if frame.startswith("Runner.run (asyncio/runners"):
            frames = frames[index + 1 :]
            break
    return (kind, frames, int(count_text)) if frames else None


def summarise_profile(path: Path) -> str:
    """Self and inclusive shares by component, per thread kind, and the top self-time frames."""
    threads: Counter[str] = Counter()
    self_time: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    hotspots: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        parsed = _parse_stack(line)
        if parsed is None:
            continue
        kind, frames, count = parsed
        threads[kind] += count
        self_time.setdefault(kind, Counter())[component(frames[-1])] += count
        for name in {component(frame) for frame in frames}:
            inclusive.setdefault(kind, Counter())[name] += count
        hotspots.setdefault(kind, Counter())[re.sub(r":\d+\)$", ")", frames[-1])] += count
    lines = []
    total = sum(threads.values())
    for kind, samples in threads.most_common():
        lines.append(f"{kind}: {samples} non-idle samples ({samples / total:.0%} of all)")
        lines.append(f"  {'component':<52} {'self':>6} {'incl.':>6}")
        for name, incl in sorted(
            inclusive[kind].items(), key=lambda item: (-self_time[kind][item[0]], -item[1])
        ):
            own = self_time[kind][name]
            lines.append(f"  {name:<52} {own / samples:>6.1%} {incl / samples:>6.1%}")
        lines.append(f"  top self-time frames ({kind}):")
        for frame, count in hotspots[kind].most_common(15 if kind == "event loop thread" else 5):
            lines.append(f"    {count / samples:>6.1%}  {frame}")
    return "\n".join(lines)


def profile(pid: int, port: int, script: Path, *, seconds: int, connections: int, out: Path) -> str:
    spy = subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        run_wrk(port, script, seconds + 1, connections)
        spy.wait(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            os.killpg(spy.pid, signal.SIGKILL)
            spy.wait(timeout=5)
    return summarise_profile(out)


# --- the run -------------------------------------------------------------------------------


@dataclass
class ServerResult:
    notes: WrkResult
    note: WrkResult
    rates: dict[float, OpenLoopResult] = field(default_factory=dict)
    profile: str = ""


def measure(
    label: str,
    command: list[str],
    *,
    env: dict[str, str],
    port: int,
    database: Database,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    headers: dict[str, str] | None = None,
    profile_to: Path | None = None,
    keep_answers: Path | None = None,
    access_log: Path | None = None,
) -> tuple[ServerResult, list[str]]:
    """Start the server, check its answers, measure it, check them again.

    ``keep_answers``: write the checked answers there (for the floor). ``access_log``: the
    server's stdout goes there, and each closed-loop run counts its slow logged requests."""
    print(f"[{database.name}] {label}: starting", file=sys.stderr, flush=True)
    log = args.workdir / f"{label}-{database.name}.stderr"
    with server(command, env, log, stdout=access_log) as process:
        wait_serving(process, port, log, headers)
        ids = verify(port, database, headers)
        if keep_answers is not None:
            keep_answers.write_bytes(orjson.dumps(answers(port, database, headers)))
        for name in ("notes", "note"):
            run_wrk(port, scripts[name], WARMUP_SECONDS, args.connections)

        def closed_loop(name: str) -> WrkResult:
            wait_quiet(process.pid, args.quiet_wait)
            logged_from = access_log.stat().st_size if access_log else 0
            with CpuMeter(process.pid) as meter:
                result = run_wrk(port, scripts[name], args.duration, args.connections)
            result.cpu = meter.use
            if access_log is not None:
                durations = logged_durations(access_log, logged_from)
                result.slow_logged = sum(1 for ms in durations if ms > SLOW_LOGGED_MS)
                result.logged_max_ms = max(durations, default=0.0)
            return result

        result = ServerResult(closed_loop("notes"), closed_loop("note"))
        for rate in args.rates:
            wait_quiet(process.pid, args.quiet_wait)
            with CpuMeter(process.pid) as meter:
                outcome = open_loop(port, {"query": NOTES_QUERY}, rate, args.duration, headers)
            outcome.cpu = meter.use
            result.rates[rate] = outcome
        if profile_to is not None:
            wait_quiet(process.pid, args.quiet_wait)
            result.profile = profile(
                process.pid,
                port,
                scripts["notes"],
                seconds=args.duration,
                connections=args.connections,
                out=profile_to,
            )
        verify(port, database, headers)  # still answering correctly after the load
    print(f"[{database.name}] {label}: done", file=sys.stderr, flush=True)
    return result, ids


@dataclass
class Variant:
    """Another pcf-api server measured in the same rounds: its settings and request headers."""

    label: str
    env: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


def jwt_variant(workdir: Path) -> Variant:
    """An RS256 key published as a local JWKS file, and a token for BENCH_USER signed with it:
    what a production client sends (the token is reused, as clients reuse theirs)."""
    import jwt  # noqa: PLC0415 - only the --jwt variant needs it
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from jwt.algorithms import RSAAlgorithm  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "RS256"}
    jwks = workdir / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [jwk]}))
    issuer, audience = "https://issuer.bench.invalid", "pcf-api"
    claims = {"sub": BENCH_USER, "iss": issuer, "aud": audience, "exp": time.time() + 7200}
    token = jwt.encode(claims, key, "RS256", headers={"kid": "bench"})
    env = {
        "PCF_AUTH__JWKS_PATH": str(jwks),
        "PCF_AUTH__ISSUER": issuer,
        "PCF_AUTH__AUDIENCE": audience,
        "PCF_AUTH__DEMO_USER": "",
    }
    return Variant("pcf-api+jwt", env, {"Authorization": f"Bearer {token}"})


def observability_variants(otlp_endpoint: str) -> list[Variant]:
    """pcf-api as measured (metrics on, tracing off) against metrics off, and against tracing
    at ratios 0.1 and 1.0 exporting to a local OTLP sink."""

    def traced(ratio: str) -> Variant:
        env = {
            "PCF_TRACING__ENABLED": "true",
            "PCF_TRACING__ENDPOINT": otlp_endpoint,
            "PCF_TRACING__SAMPLE_RATIO": ratio,
        }
        return Variant(f"pcf-api+tracing-{ratio}", env)

    return [
        Variant("pcf-api-no-metrics", {"PCF_METRICS__ENABLED": "false"}),
        traced("0.1"),
        traced("1.0"),
    ]


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts every export and keeps nothing."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    sink.daemon_threads = True
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    finally:
        sink.shutdown()
        sink.server_close()


def pcf_env(database: Database, port: int, log_level: str) -> dict[str, str]:
    return {
        **clean_env(),
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__FORMAT": "json",
        "PCF_LOG__LEVEL": log_level,
        "PCF_SERVER__PORT": str(port),
        "PCF_SERVER__DRAIN_SECONDS": "0",
        "PCF_SERVER__SHUTDOWN_TIMEOUT": "5",
        "PCF_DATABASE__URL": database.url,
        "PCF_AUTH__DEMO_USER": BENCH_USER,
        # wrk sends thousands of requests a second from one client: far past any sane budget.
        "PCF_RATE_LIMIT__ENABLED": "false",
    }


@dataclass
class Server:
    """One server of a round: a peer, or pcf-api with a variant's settings."""

    label: str
    command: list[str]
    env: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    is_pcf_api: bool = False


def round_servers(
    database: Database, args: argparse.Namespace, floor_answers: Path
) -> list[Server]:
    """The servers of one round after the tutorial baseline, each on a fresh port."""
    servers = []
    for peer in args.peers:
        port = free_port()
        env = {**clean_env(), **peers.environment(peer, port, database.url, floor_answers)}
        servers.append(Server(peer.label, peers.command(peer, port), env))
    for variant in [Variant("pcf-api", {}), *args.variants]:
        env = {**pcf_env(database, free_port(), args.log_level), **variant.env}
        command = [str(BIN / "pcf-api"), "serve"]
        servers.append(Server(variant.label, command, env, variant.headers, is_pcf_api=True))
    return servers


def server_port(server: Server) -> int:
    for name in ("PCF_SERVER__PORT", "BENCH_PORT"):
        if name in server.env:
            return int(server.env[name])
    return int(server.command[server.command.index("--port") + 1])


def run_database(
    database: Database, args: argparse.Namespace, workdir: Path
) -> dict[str, list[ServerResult]]:
    """The tutorial baseline, then the other peers and the pcf-api servers, ``--repeat`` times;
    each server started afresh every round. The baseline goes first (its verified answers are
    the reference every other server must give, and the floor replays them); the others take
    turns at going first: measured here, the server right after the baseline ran ≈ 5 % slower
    than the same server later in the round, which would otherwise be charged to whichever
    server always sat there."""
    seed(database)
    floor_answers = workdir / f"floor-answers-{database.name}.json"
    labels = [peers.BASELINE.label, *(p.label for p in args.peers)]
    labels += ["pcf-api", *(variant.label for variant in args.variants)]
    headers_of = {"pcf-api": {}, **{variant.label: variant.headers for variant in args.variants}}
    scripts = {
        label: {
            name: wrk_script(workdir, f"{name}-{label}", payload, headers_of.get(label, {}))
            for name, payload in (
                ("notes", {"query": NOTES_QUERY}),
                ("note", {"query": NOTE_QUERY, "variables": {"id": database.note_id}}),
            )
        }
        for label in labels
    }
    results: dict[str, list[ServerResult]] = {label: [] for label in labels}
    for round_number in range(1, args.repeat + 1):
        last = round_number == args.repeat
        port = free_port()
        baseline, baseline_ids = measure(
            peers.BASELINE.label,
            peers.command(peers.BASELINE, port),
            env={**clean_env(), "BENCH_DATABASE_URL": database.url},
            port=port,
            database=database,
            args=args,
            scripts=scripts[peers.BASELINE.label],
            keep_answers=floor_answers,
        )
        results[peers.BASELINE.label].append(baseline)
        servers = round_servers(database, args, floor_answers)
        turn = (round_number - 1) % len(servers)
        for server in servers[turn:] + servers[:turn]:
            profile_to = None
            if server.label == "pcf-api" and args.profile is not None and last:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile_to = args.profile / f"pcf-api-{database.name}.txt"
            outcome, ids = measure(
                server.label,
                server.command,
                env=server.env,
                port=server_port(server),
                database=database,
                args=args,
                scripts=scripts[server.label],
                headers=server.headers or None,
                profile_to=profile_to,
                access_log=workdir / f"access-{server.label}-{database.name}.jsonl"
                if server.is_pcf_api
                else None,
            )
            if ids != baseline_ids:
                raise SystemExit(
                    f"{server.label} and the baseline disagree on the first page: "
                    f"{ids} {baseline_ids}"
                )
            results[server.label].append(outcome)
    return results


def _cpu(use: CpuUse) -> str:
    flag = " (!)" if use.other > QUIET_CORES else ""
    return f"{use.server:.2f} | {use.database:.2f} | {use.client:.2f} | {use.other:.2f}{flag}"


def source_state() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def _median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda run: run.rps)[len(runs) // 2]


def paired_ratio(runs: list[WrkResult], peer_runs: list[WrkResult]) -> float:
    """The median over rounds of requests/s against the peer's in the same round: the machine's
    drift between rounds cancels out."""
    ratios = sorted(run.rps / peer.rps for run, peer in zip(runs, peer_runs, strict=True))
    return ratios[len(ratios) // 2]


RATIO_PEERS = ("yoga", "strawberry-cached", "strawberry", "floor")
TARGETS = {"yoga": 0.5, "strawberry-cached": 2.0}  # issue 20: pcf-api at least this many times


def stalled(run: WrkResult) -> bool:
    return run.p99_ms > STALL_RATIO * run.p50_ms or bool(run.slow_logged)


def verdicts(results: dict[str, dict[str, list[ServerResult]]]) -> list[str]:
    """pcf-api against the targets, one line each: ratio to each peer and the stall check."""
    lines = []
    for db, servers in results.items():
        for query in ("notes", "note"):
            ours = [getattr(run, query) for run in servers.get("pcf-api", [])]
            if not ours:
                continue
            for peer, target in TARGETS.items():
                if peer in servers:
                    ratio = paired_ratio(ours, [getattr(run, query) for run in servers[peer]])
                    verdict = "met" if ratio >= target else "NOT met"
                    lines.append(
                        f"{db} {query}: pcf-api {ratio:.2f}x {peer} (target {target:g}x) {verdict}"
                    )
            row = _median_run(ours)
            verdict = "STALLED" if any(stalled(run) for run in ours) else "no stall"
            lines.append(
                f"{db} {query}: pcf-api p99/p50 {row.p99_ms / row.p50_ms:.1f} (at most "
                f"{STALL_RATIO:g}), logged over {SLOW_LOGGED_MS:g} ms: "
                f"{sum(run.slow_logged or 0 for run in ours)} in {len(ours)} runs: {verdict}"
            )
    return lines


def report(results: dict[str, dict[str, list[ServerResult]]], args: argparse.Namespace) -> None:
    rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
    present = [peer for peer in RATIO_PEERS if any(peer in s for s in results.values())]
    print(
        f"\nsource {source_state()}; wrk -t2 -c{args.connections} -d{args.duration}s --latency "
        f"--timeout {WRK_TIMEOUT}s (POST /graphql), {NOTES} notes, one server process each, "
        f"pcf-api logs at {args.log_level}{rounds}. vs columns: requests/s against that server's "
        "in the same round (median over rounds). logged: requests over "
        f"{SLOW_LOGGED_MS:g} ms in pcf-api's own access log. CPU columns: average cores busy "
        f"(server, PostgreSQL, load generator, everything else; (!) = over {QUIET_CORES} cores "
        "elsewhere, a disturbed measurement)\n"
    )
    print(
        "| database | query | server | requests/s | range | p50 | p99 | p99/p50 | logged "
        "| errors | "
        + "".join(f"vs {peer} | " for peer in present)
        + "server CPU | DB CPU | client CPU | other CPU |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(present) + 4))
    for db, servers in results.items():
        for query in ("notes", "note"):
            for name, runs in servers.items():
                rows = [getattr(run, query) for run in runs]
                row = _median_run(rows)
                spread = f"{min(r.rps for r in rows):,.0f}-{max(r.rps for r in rows):,.0f}"
                ratios = "".join(
                    f"{paired_ratio(rows, [getattr(run, query) for run in servers[peer]]):.2f}x | "
                    if peer in servers and peer != name
                    else " | "
                    for peer in present
                )
                logged = (
                    "" if row.slow_logged is None else str(sum(r.slow_logged or 0 for r in rows))
                )
                print(
                    f"| {db} | {query} | {name} | {row.rps:,.0f} | {spread} | "
                    f"{row.p50_ms:.1f} ms | {row.p99_ms:.1f} ms | {row.p99_ms / row.p50_ms:.1f} | "
                    f"{logged} | {sum(r.errors for r in rows)} | {ratios}{_cpu(row.cpu)} |"
                )
    print("\ntargets (issue 20):")
    for line in verdicts(results):
        print(f"- {line}")
    for rate in args.rates:
        print(
            f"\nopen loop, notes query, {rate:g} requests/s for {args.duration} s (latency from "
            f"the scheduled send time; timeout {OPEN_LOOP_TIMEOUT:g} s; worst round by p99)\n"
        )
        print(
            "| database | server | sent | ok | p50 | p99 | max | errors | connections "
            "| server CPU | DB CPU | client CPU | other CPU |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        lags = []
        for db, servers in results.items():
            for name, runs in servers.items():
                outcome = max((run.rates[rate] for run in runs), key=lambda o: o.p99_ms)
                lags.append(max(run.rates[rate].max_dispatch_lag_ms for run in runs))
                errors = ", ".join(f"{k}: {v}" for k, v in outcome.errors.items()) or "0"
                print(
                    f"| {db} | {name} | {outcome.sent} | {outcome.ok} | "
                    f"{outcome.p50_ms:.1f} ms | {outcome.p99_ms:.1f} ms | "
                    f"{outcome.max_ms:.1f} ms | {errors} | {outcome.connections} | "
                    f"{_cpu(outcome.cpu)} |"
                )
        print(f"\n(load generator: largest lag behind its timetable {max(lags):.1f} ms)")
    for db, servers in results.items():
        if servers["pcf-api"][-1].profile:
            print(f"\npy-spy profile, pcf-api, {db}, notes query under wrk:\n")
            print(servers["pcf-api"][-1].profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument(
        "--rate", default="300", help="open-loop requests/s, comma-separated; 0: skip"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds per database (median)")
    parser.add_argument("--log-level", default="INFO", help="pcf-api log level (INFO)")
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of pcf-api here")
    parser.add_argument(
        "--peers",
        default=",".join(peer.label for peer in peers.PEERS[1:]),
        help="servers besides the tutorial baseline and pcf-api: strawberry-cached, yoga, floor "
        "(comma-separated; empty: none)",
    )
    parser.add_argument(
        "--jwt",
        action="store_true",
        help="also run pcf-api with RS256 bearer tokens instead of the demo identity",
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="also run pcf-api without metrics, and with tracing at ratios 0.1 and 1.0",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="seconds to wait at most for other processes to go quiet before each measurement",
    )
    args = parser.parse_args()
    args.rates = [float(rate) for rate in args.rate.split(",") if float(rate) > 0]
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if not set(databases) <= {"sqlite", "postgres"}:
        parser.error("--databases takes sqlite and/or postgres")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    try:
        args.peers = [
            peers.BY_LABEL[label.strip()] for label in args.peers.split(",") if label.strip()
        ]
    except KeyError as unknown:
        parser.error(f"--peers: no peer {unknown}")
    if peers.BASELINE in args.peers:
        parser.error("--peers: the tutorial baseline always runs")
    if peers.YOGA in args.peers:
        peers.install_yoga()

    def stop(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    results: dict[str, dict[str, list[ServerResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="pcf-bench-graphql-") as tmp:
        workdir = args.workdir = Path(tmp)
        with otlp_sink() as otlp_endpoint:
            args.variants = [jwt_variant(workdir)] if args.jwt else []
            if args.observability:
                args.variants.extend(observability_variants(otlp_endpoint))
            for name in databases:
                context = sqlite_database(workdir) if name == "sqlite" else postgres_database()
                with context as database:
                    results[name] = run_database(database, args, workdir)
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
