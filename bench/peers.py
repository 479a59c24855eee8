"""The servers bench/graphql.py measures pcf-api against, and how each one is started.

Every peer serves the same notes schema subset on the same seeded table, one process on
127.0.0.1, and is measured only after its answers have been checked:

* ``strawberry`` - the tutorial app (bench/baseline_app.py), no caches;
* ``strawberry-cached`` - the same with Strawberry's documented parser and validation caches;
* ``yoga`` - GraphQL Yoga 5 on node:http (bench/yoga/server.mjs), better-sqlite3 or pg;
* ``floor`` - a bare ASGI app replaying verified answers (bench/floor_app.py): HTTP only.

The Python peers run under uvicorn with pcf-api's server options (httptools, uvloop, no access
log, no server header, keep-alive 5 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
YOGA_DIR = ROOT / "bench" / "yoga"
NPM_TIMEOUT = 600  # better-sqlite3 compiles its addon on first install


@dataclass(frozen=True)
class Peer:
    label: str
    """The name in the report."""
    module: str = ""
    """``module:app`` for uvicorn; empty for Yoga."""

    @property
    def is_yoga(self) -> bool:
        return not self.module


BASELINE = Peer("strawberry", "bench.baseline_app:app")
STRAWBERRY_CACHED = Peer("strawberry-cached", "bench.strawberry_cached_app:app")
YOGA = Peer("yoga")
FLOOR = Peer("floor", "bench.floor_app:app")
PEERS = (BASELINE, STRAWBERRY_CACHED, YOGA, FLOOR)
BY_LABEL = {peer.label: peer for peer in PEERS}


def uvicorn_command(module: str, port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        module,  # as a module of ROOT: bench/ itself holds a graphql.py
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
        "--timeout-keep-alive",
        "5",
    ]


def node_url(database_url: str) -> str:
    """The SQLAlchemy URL both Python servers take, as the Node drivers take it."""
    for prefix, plain in (
        ("sqlite+aiosqlite://", "sqlite://"),
        ("postgresql+asyncpg://", "postgresql://"),
    ):
        if database_url.startswith(prefix):
            return plain + database_url.removeprefix(prefix)
    raise ValueError(f"no Node driver for {database_url.split(':', 1)[0]}")


def command(peer: Peer, port: int) -> list[str]:
    if peer.is_yoga:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node is not installed (apt-get install nodejs)")
        return [node, str(YOGA_DIR / "server.mjs")]
    return uvicorn_command(peer.module, port)


def environment(peer: Peer, port: int, database_url: str, floor_answers: Path) -> dict[str, str]:
    """The variables the peer reads, on top of a clean environment."""
    if peer.is_yoga:
        return {"BENCH_DATABASE_URL": node_url(database_url), "BENCH_PORT": str(port)}
    if peer is FLOOR:
        return {"BENCH_FLOOR_ANSWERS": str(floor_answers)}
    return {"BENCH_DATABASE_URL": database_url}


def install_yoga() -> None:
    """``npm ci`` in bench/yoga when node_modules is missing or older than the lock file."""
    installed = YOGA_DIR / "node_modules" / ".package-lock.json"
    lock = YOGA_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed (apt-get install npm)")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=YOGA_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"npm ci in {YOGA_DIR} failed:\n{result.stdout}\n{result.stderr}")
