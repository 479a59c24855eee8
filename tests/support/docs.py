"""Run the documentation's code blocks as a reader would: in a checkout, after `make run`.

The checkout is a temporary directory holding the Makefile and a link to this repository's
`.venv` (which `make run` would have created), so relative commands such as `.venv/bin/pcf-api`
and `data/…` resolve as they do in a clone. The server is started with the very recipe `make run`
runs (`make -n`, the virtualenv taken as up to date), on a free port: every `127.0.0.1:8080` in a
block becomes that port. `tests/integration/test_make_run.py` covers `make run` from scratch.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.servers import clean_environ

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDRESS = "127.0.0.1:8080"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Not the reader's concern, only the suite's time: the server stops without its 5 s drain.
_QUICK_STOP = {"PCF_SERVER__DRAIN_SECONDS": "0.2"}
_MAKE_RUN = re.compile(r"^((?:[A-Z][A-Z0-9_]*=\S+ )*)make run$")


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def fenced_blocks(path: Path, language: str, *, after: str = "", before: str = "") -> list[Block]:
    """The ```language blocks of ``path``, optionally only between two headings."""
    text = path.read_text(encoding="utf-8")
    if after:
        text = text[text.index(after) :]
    if before:
        text = text[: text.index(before)]
    return [Block(lang, body) for lang, body in _FENCE.findall(text) if lang == language]


@dataclass
class Checkout:
    """A reader's checkout: where blocks run, and the server `make run` starts there."""

    path: Path
    port: int
    servers: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        environ = clean_environ(dict(extra or {}))
        environ.pop("VIRTUAL_ENV", None)
        return environ

    def localised(self, text: str) -> str:
        return text.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{self.port}")

    def run(
        self, text: str, extra: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A shell block, as pasted: stops at the first failing command."""
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", self.localised(text)],
            cwd=self.path,
            env=self.environ(extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def make_run_recipe(self) -> str:
        """What `make run` executes here, on this checkout's port."""
        result = subprocess.run(
            ["make", "-s", "-n", "-o", ".venv/.runtime", "run", f"PORT={self.port}"],
            cwd=self.path,
            capture_output=True,
            text=True,
            check=True,
        )
        return " && ".join(line for line in result.stdout.splitlines() if line.strip())

    def start_server_block(self, text: str) -> None:
        """A block whose last line is `[VAR=value …] make run`: the lines before it, then the
        server in the background, until it serves."""
        *setup, last = [line for line in text.strip().splitlines() if line.strip()]
        match = _MAKE_RUN.match(last.strip())
        assert match, f"the block does not end with `make run`: {last!r}"
        if setup:
            prepared = self.run("\n".join(setup))
            assert prepared.returncode == 0, prepared.stderr
        self.stop_servers()
        command = f"{match.group(1)}bash -c {shlex.quote(self.make_run_recipe())}"
        log = (self.path / f"make-run-{len(self.servers)}.log").open("wb")
        with log:
            self.servers.append(
                subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=self.path,
                    env=self.environ(_QUICK_STOP),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.wait_until_ready()

    def wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        logs = "".join(path.read_text() for path in sorted(self.path.glob("make-run-*.log")))
        raise AssertionError(f"`make run` not ready after {timeout} s:\n{logs[-4000:]}")

    def stop_servers(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def checkout(path: Path, port: int) -> Iterator[Checkout]:
    """A checkout in ``path``, its servers stopped at the end (a fixture's body)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Makefile", path / "Makefile")
    (path / ".venv").symlink_to(ROOT / ".venv")
    made = Checkout(path, port, [])
    try:
        yield made
    finally:
        made.stop_servers()
