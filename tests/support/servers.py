"""Real `pcf-api` processes on loopback ports, with their output captured for inspection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

PCF_API = Path(sys.executable).with_name("pcf-api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any PCF_ setting, plus ``extra``."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PCF_")}
    environ.update(extra)
    return environ


@dataclass
class ServerProcess:
    """A `pcf-api serve` subprocess; stdout and stderr go to files read after it exits."""

    port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    exit_code: int | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited early with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"server not serving after {timeout} s:\n{self.output()}")

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        self.exit_code = self.process.wait(timeout=timeout)
        return self.exit_code

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def log_lines(self) -> list[dict[str, Any]]:
        """stdout and stderr, each line parsed as JSON (fails on any line that is not)."""
        lines = [line for line in self.output().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]

    def wait_for_log(self, message: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The JSON lines whose message is ``message``, once there is one: output goes through
        a log queue and a writer thread, so a line appears shortly after what caused it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines() if line.get("message") == message]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


class ServerFactory(Protocol):
    """The ``server_factory`` fixture: ``server_factory(env, *args)`` starts a server."""

    def __call__(self, env: Mapping[str, str], *args: str) -> ServerProcess: ...


def start_server(tmp_path: Path, env: Mapping[str, str], *args: str) -> ServerProcess:
    requested = env.get("PCF_SERVER__PORT", "")
    port = int(requested) if requested.isdigit() else free_port()
    environ = clean_environ({"PCF_SERVER__PORT": str(port), **env})  # env may override the port
    stdout_path = tmp_path / f"server-{port}.out"
    stderr_path = tmp_path / f"server-{port}.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(PCF_API), "serve", *args], env=environ, stdout=stdout, stderr=stderr, cwd=tmp_path
        )
    return ServerProcess(port, process, stdout_path, stderr_path)


DEV_JSON = {
    "PCF_ENVIRONMENT": "development",
    "PCF_LOG__FORMAT": "json",
    "PCF_SERVER__DRAIN_SECONDS": "0.2",
    # Clients without credentials act as alice, the author the tests write as.
    "PCF_AUTH__DEMO_USER": "alice",
}
