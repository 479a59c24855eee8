"""Requests/s of the notes query on container images, interleaved in the same run: the same
application on two Debian suites' Pythons (Debian 12's 3.11 and Debian 13's 3.13).

    .venv/bin/python bench/image_python.py
        [--images localhost/pcf-api:dev,localhost/pcf-api:dev-trixie] [--rounds 3]
        [--duration 10] [--connections 50]

One SQLite file with bench/graphql.py's 1 000 notes is seeded on the host, then every round runs
each image in turn (podman or docker, host network, the image's hardening flags: read-only,
no capabilities, uid 65532) on a fresh copy of that file: its answers are checked, then wrk
measures the notes query after a warm-up. The table gives each image's median requests/s, p50
and p99, and its ratio to the first image. The images run the development profile with the
demo identity and rate limits off, as bench/graphql.py runs pcf-api, with JSON logs at INFO.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.graphql import (
    BENCH_USER,
    NOTES_QUERY,
    ROOT,
    WARMUP_SECONDS,
    WrkResult,
    free_port,
    graphql_post,
    run_wrk,
    seeded_database,
    wrk_script,
)


@dataclass
class ImageRun:
    image: str
    python: str
    results: list[WrkResult]


@dataclass(frozen=True)
class Engine:
    """podman or docker, with the environment scripts/lib/engine.sh gives it on this machine."""

    name: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise SystemExit(f"image_python: {self.name} {args[0]} failed: {result.stderr}")
        return result.stdout.strip()


def find_engine() -> Engine:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/lib/engine.sh")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit("image_python: no container engine: " + result.stderr.strip())
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Engine(found.pop("ENGINE"), {**os.environ, **found})


def image_python(engine: Engine, image: str) -> str:
    version = "import sys; print(sys.version.split()[0])"
    return engine.run("run", "--rm", "--entrypoint", "/usr/bin/python3", image, "-I", "-c", version)


def start(engine: Engine, image: str, data: Path, port: int) -> str:
    """The image's server, detached, hardened as in production, on the host network."""
    env = {
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__FORMAT": "json",
        "PCF_LOG__LEVEL": "INFO",
        "PCF_SERVER__DRAIN_SECONDS": "0",
        "PCF_DATABASE__URL": "sqlite+aiosqlite:////data/notes.db",
        "PCF_AUTH__DEMO_USER": BENCH_USER,
        "PCF_RATE_LIMIT__ENABLED": "false",
    }
    return engine.run(
        "run", "-d", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--tmpfs", "/tmp", "-v", f"{data}:/data",
        *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
        image, "serve", "--port", str(port),
    )  # fmt: skip


def wait_ready(port: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"image_python: not ready on port {port} within {limit} s")
        time.sleep(0.3)


def check_answer(port: int) -> None:
    """The notes query's answer: ten edges of the 1 000 seeded notes, no errors."""
    status, body = graphql_post(port, NOTES_QUERY)
    notes = (body.get("data") or {}).get("notes") if isinstance(body, dict) else None
    if status != 200 or not notes or notes["totalCount"] != 1000 or len(notes["edges"]) != 10:
        raise SystemExit(f"image_python: unexpected answer {status} {body}")


def measure(
    engine: Engine, *, image: str, seeded: Path, work: Path, script: Path, args: argparse.Namespace
) -> WrkResult:
    data = Path(tempfile.mkdtemp(dir=work))
    data.chmod(0o777)
    shutil.copy(seeded, data / "notes.db")
    (data / "notes.db").chmod(0o666)
    port = free_port()
    container = start(engine, image, data, port)
    try:
        wait_ready(port)
        check_answer(port)
        run_wrk(port, script, WARMUP_SECONDS, args.connections)
        result = run_wrk(port, script, args.duration, args.connections)
        check_answer(port)  # still right after the load
        return result
    finally:
        engine.run("rm", "-f", container, check=False)
        shutil.rmtree(data, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="localhost/pcf-api:dev,localhost/pcf-api:dev-trixie")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    engine = find_engine()
    images = args.images.split(",")
    with tempfile.TemporaryDirectory(prefix="pcf-image-bench-") as directory:
        work = Path(directory)
        with seeded_database("sqlite", work) as database:
            seeded = Path(database.sync_url.removeprefix("sqlite:///"))
            script = wrk_script(work, "notes", {"query": NOTES_QUERY})
            runs = [ImageRun(image, image_python(engine, image), []) for image in images]
            for round_number in range(1, args.rounds + 1):
                for run in runs:
                    result = measure(
                        engine, image=run.image, seeded=seeded, work=work, script=script, args=args
                    )
                    if result.errors:
                        raise SystemExit(
                            f"image_python: {run.image}: {result.errors} errors under load"
                        )
                    run.results.append(result)
                    print(
                        f"round {round_number} {run.image} (Python {run.python}):",
                        f"{result.rps:.0f} req/s",
                        flush=True,
                    )
    first = statistics.median(r.rps for r in runs[0].results)
    print(
        f"\nnotes query, median of {args.rounds} interleaved rounds,",
        f"wrk -t2 -c{args.connections} -d{args.duration}s",
    )
    print(f"{'image':40} {'python':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for run in runs:
        rps = statistics.median(r.rps for r in run.results)
        p50 = statistics.median(r.p50_ms for r in run.results)
        p99 = statistics.median(r.p99_ms for r in run.results)
        print(f"{run.image:40} {run.python:8} {rps:8.0f} {p50:8.1f} {p99:8.1f} {rps / first:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
