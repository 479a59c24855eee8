"""scripts/package_currency.py on the image: every Debian package it carries is at the newest
version its suite (+ updates + security) publishes on the mirror, and an image that pins an
older version of one package fails the check."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support.scripts import load_script

from .conftest import ROOT, Engine

SCRIPT = ROOT / "scripts" / "package_currency.py"
PINNED = "libssl3"


def check(archive: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(archive), "--report", str(report)],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_debian_package_of_a_fresh_build_is_current(
    image_archive: Path, tmp_path: Path
) -> None:
    result = check(image_archive, tmp_path / "report.txt")
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "report.txt").read_text()
    rows = re.findall(r"^(\S+)\s+(\S+)\s+(\S+)\s+(current|BEHIND|MISSING)$", report, re.M)
    assert {name for name, *_ in rows} >= {"libc6", PINNED, "python3.11-minimal"}
    assert all(verdict == "current" for *_, verdict in rows), report
    distributions = report.split("Python distributions:", 1)[1]
    assert re.search(r"^pcf_api \S+$", distributions, re.M), distributions
    assert re.search(r"^cryptography 38\.\S+$", distributions, re.M), distributions


def test_an_image_pinning_an_older_version_of_one_package_fails(
    engine: Engine, image: str, image_archive: Path, tmp_path: Path
) -> None:
    checks = load_script(ROOT / "scripts" / "image_checks.py")
    files = checks.load(str(image_archive)).files
    control = files[f"var/lib/dpkg/status.d/{PINNED}"].data.decode()
    current = re.search(r"^Version: (\S+)$", control, re.M)
    assert current is not None, control
    older = f"{current.group(1)}~older"  # sorts before it in Debian's order
    (tmp_path / PINNED).write_text(
        control.replace(f"Version: {current.group(1)}", f"Version: {older}")
    )
    (tmp_path / "Containerfile").write_text(
        f"FROM {image}\nCOPY {PINNED} /var/lib/dpkg/status.d/{PINNED}\n"
    )
    pinned = "localhost/pcf-api:pinned-older-test"
    engine.run("build", "-q", "-t", pinned, "-f", str(tmp_path / "Containerfile"), str(tmp_path))
    try:
        archive = engine.save(pinned, tmp_path / "pinned.tar")
    finally:
        engine.run("rmi", "-f", pinned, check=False)

    result = check(archive, tmp_path / "report.txt")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{PINNED} {older}: newest {current.group(1)}" in result.stderr
    assert re.search(
        rf"^{PINNED}\s+\S+\s+\S+\s+BEHIND$", (tmp_path / "report.txt").read_text(), re.M
    )
