"""Fixtures for the container image tests: the engine, the image (built when missing), helpers.

The tests run the real image with podman (or docker). Without any engine they are skipped,
except under CI=true or PCF_REQUIRE_CONTAINER_TESTS=1, where a missing engine is a failure.

    PCF_IMAGE          image under test (default localhost/pcf-api:dev; built when missing)
    PCF_IMAGE_ARM64    the arm64 image (default localhost/pcf-api:dev-arm64; built when missing
                       and qemu's aarch64 binfmt handler is registered)
    PCF_LOCAL_BASE=1   build the builder's Debian base with debootstrap (no registry)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PCF_IMAGE", "localhost/pcf-api:dev")
IMAGE_ARM64 = os.environ.get("PCF_IMAGE_ARM64", "localhost/pcf-api:dev-arm64")
BUILD_TIMEOUT = 1800
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("PCF_REQUIRE_CONTAINER_TESTS") == "1"


def unavailable(reason: str) -> None:
    """Skip on a developer machine without the means; fail where the tests are required."""
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class Engine:
    name: str
    env: dict[str, str]

    @property
    def is_podman(self) -> bool:
        return Path(self.name).name == "podman"

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0

    def inspect(self, image: str) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(self.run("image", "inspect", image).stdout)
        return document[0]

    def build(self, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
        """scripts/build-image.sh; returns its output (the size report)."""
        result = subprocess.run(
            ["bash", str(cwd / "scripts/build-image.sh"), *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"image build failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def save(self, image: str, target: Path) -> Path:
        args = ["save", "-o", str(target), image]
        if self.is_podman:
            args[1:1] = ["--format", "docker-archive"]
        self.run(*args, timeout=300)
        return target


@pytest.fixture(scope="session")
def engine() -> Engine:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/lib/engine.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        unavailable("no container engine (podman or docker): " + result.stderr.strip())
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    env = {**os.environ, **{k: v for k, v in found.items() if k != "ENGINE"}}
    return Engine(found["ENGINE"], env)


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    if not engine.image_exists(IMAGE):
        engine.build("--tag", IMAGE)
    return IMAGE


@pytest.fixture(scope="session")
def image_archive(engine: Engine, image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine.save(image, tmp_path_factory.mktemp("image") / "image.tar")


@pytest.fixture(scope="session")
def arm64_image(engine: Engine) -> str:
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        unavailable(
            "no qemu aarch64 binfmt handler (apt-get install qemu-user-static; see .ci/run)"
        )
    if not engine.image_exists(IMAGE_ARM64):
        engine.build("--platform", "linux/arm64", "--tag", IMAGE_ARM64)
    return IMAGE_ARM64


@pytest.fixture(scope="session")
def tools() -> Path:
    """The linters' virtual environment (hadolint, checkov, syft, actionlint): `make tools`."""
    venv = ROOT / ".venv-tools"
    if not (venv / ".installed").exists():
        result = subprocess.run(
            ["make", "-s", "tools"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            unavailable("cannot install the image linters (make tools):\n" + result.stderr)
    return venv / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


HS256_SECRET = "container-test-Secret-0123456789-abcdefgh"


class Container:
    """One detached container; its logs and exit code are read after it stops."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name

    def logs(self) -> str:
        result = self.engine.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.engine.run("logs", self.name).stdout.splitlines()]

    def state(self) -> dict[str, Any]:
        document = json.loads(self.engine.run("inspect", self.name).stdout)
        state: dict[str, Any] = document[0]["State"]
        return state

    def wait(self, timeout: float = 60) -> int:
        result = self.engine.run("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def exec(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.engine.run("exec", self.name, *args, check=check)

    def wait_until_healthy(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.state().get("Running", False):
                raise AssertionError(f"container stopped:\n{self.logs()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{url} did not answer within {timeout} s:\n{self.logs()}")


HARDENED = (
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--tmpfs",
    "/tmp:rw,size=64m,mode=1777",
)


class StartContainer(Protocol):
    """The ``start`` fixture: ``start(image, *run_args, cmd=(...))`` runs a container."""

    def __call__(self, image: str, *run_args: str, cmd: Sequence[str] = ()) -> Container: ...


@pytest.fixture
def start(engine: Engine) -> Iterator[StartContainer]:
    """start(image, *run_args, cmd=(...)) -> Container, removed at the end of the test."""
    started: list[Container] = []

    def factory(image: str, *run_args: str, cmd: Sequence[str] = ()) -> Container:
        name = f"pcf-test-{uuid.uuid4().hex[:10]}"
        args = ["run", "-d", "--name", name, *run_args, image, *cmd]
        if engine.is_podman:
            # No systemd here to run podman's healthcheck timer; `podman healthcheck run` works.
            args[4:4] = ["--health-interval", "disable"]
        engine.run(*args)
        container = Container(engine, name)
        started.append(container)
        return container

    yield factory
    for container in started:
        engine.run("rm", "-f", "-t", "2", container.name, check=False)


def require_tool(path: Path) -> str:
    if not path.exists() and shutil.which(path.name) is None:
        unavailable(f"{path.name} is not installed (make tools)")
    return str(path if path.exists() else shutil.which(path.name))
