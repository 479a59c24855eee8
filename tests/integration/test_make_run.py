"""From a fresh copy of the repository, `make run` sets itself up and serves within 60 s."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support.servers import clean_environ, free_port

REPO = Path(__file__).resolve().parents[2]
BUDGET_SECONDS = 60


def _fresh_copy(destination: Path) -> None:
    """What a clone would hold: tracked files plus new files not ignored, nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make"
)
def test_make_run_serves_health_within_60_seconds_including_setup(tmp_path: Path) -> None:
    checkout = tmp_path / "pcf-api"
    _fresh_copy(checkout)
    assert not (checkout / ".venv").exists()
    port = free_port()
    environ = clean_environ({})
    environ.pop("VIRTUAL_ENV", None)
    environ["PATH"] = os.pathsep.join(
        part for part in environ["PATH"].split(os.pathsep) if not part.startswith(str(REPO))
    )
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        make = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=checkout,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        elapsed = None
        while time.monotonic() - started < BUDGET_SECONDS and make.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if response.status_code == 200 and response.text == "OK":
                    elapsed = time.monotonic() - started
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        assert elapsed is not None, log_path.read_text()[-4000:]
        print(f"make run served /health after {elapsed:.1f} s")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
    assert (checkout / ".venv" / "bin" / "pcf-api").exists()
