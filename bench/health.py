"""Benchmark `/health` of a real `pcf-api serve` against a bare ASGI baseline in the same run.

    .venv/bin/python bench/health.py [--duration 10] [--connections 50]

Both servers run as one uvicorn process on loopback with the same event loop and HTTP parser;
the baseline answers "OK" with no middleware at all, so the ratio is the cost of pcf-api's
request pipeline (trace context, access log, error boundary, body limit, routing). Also reports
the idle resident memory of each process. Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BASELINE_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"OK"})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_serving(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def run_wrk(url: str, duration: int, connections: int) -> tuple[float, str]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", output).group(1)  # type: ignore[union-attr]
    return rps, p99


def measure(
    name: str, command: list[str], env: dict[str, str], port: int, args: argparse.Namespace
) -> dict[str, object]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/health"
        wait_serving(url)
        time.sleep(1)
        idle = rss_mib(process.pid)
        run_wrk(url, 2, args.connections)  # warm-up
        rps, p99 = run_wrk(url, args.duration, args.connections)
        loaded = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return {"name": name, "rps": rps, "p99": p99, "idle_rss_mib": idle, "rss_after_mib": loaded}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    bin_dir = Path(sys.executable).parent
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PCF_")}

    baseline_dir = Path("/tmp/pcf-bench")
    baseline_dir.mkdir(exist_ok=True)
    (baseline_dir / "bare_asgi.py").write_text(BASELINE_APP)
    port = free_port()
    baseline = measure(
        "bare ASGI app (baseline)",
        [
            str(bin_dir / "uvicorn"),
            "bare_asgi:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--app-dir",
            str(baseline_dir),
        ],
        base_env,
        port,
        args,
    )
    port = free_port()
    env = {
        **base_env,
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__FORMAT": "json",
        "PCF_SERVER__PORT": str(port),
        "PCF_SERVER__DRAIN_SECONDS": "0",
    }
    service = measure("pcf-api serve", [str(bin_dir / "pcf-api"), "serve"], env, port, args)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s http://127.0.0.1:PORT/health")
    for row in (baseline, service):
        print(
            f"{row['name']:<26} {row['rps']:>9.0f} req/s  p99 {row['p99']:>8}  "
            f"idle RSS {row['idle_rss_mib']:.1f} MiB  after load {row['rss_after_mib']:.1f} MiB"
        )
    print(f"pcf-api / baseline throughput: {service['rps'] / baseline['rps']:.2f}")  # type: ignore[operator]
    return 0


if __name__ == "__main__":
    sys.exit(main())
