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


def declared_packages(archive: Path) -> dict[str, str]:
    """The control data of every package the image declares in status.d, by name."""
    checks = load_script(ROOT / "scripts" / "image_checks.py")
    prefix = "var/lib/dpkg/status.d/"
    return {
        path.removeprefix(prefix): entry.data.decode()
        for path, entry in checks.load(str(archive)).files.items()
        if path.startswith(prefix) and not path.endswith(".md5sums") and entry.kind == "file"
    }


def pinned_package(declared: dict[str, str]) -> str:
    """OpenSSL's package: libssl3t64 on Debian 13, libssl3 on 12."""
    return next(name for name in ("libssl3t64", "libssl3") if name in declared)


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
    declared = declared_packages(image_archive)
    python = next(name for name in declared if re.fullmatch(r"python3\.\d+-minimal", name))
    assert {name for name, *_ in rows} == set(declared)
    assert {"libc6", pinned_package(declared), python} <= set(declared)
    assert all(verdict == "current" for *_, verdict in rows), report
    distributions = report.split("Python distributions:", 1)[1]
    assert re.search(r"^pcf_api \S+$", distributions, re.M), distributions
    # Debian's build of cryptography (prune.toml from_debian), at the Debian package's version.
    debian = re.search(r"^Version: (?:\d+:)?([^-\s]+)", declared["python3-cryptography"], re.M)
    assert debian is not None
    assert re.search(rf"^cryptography {re.escape(debian[1])}$", distributions, re.M), distributions


def test_an_image_pinning_an_older_version_of_one_package_fails(
    engine: Engine, image: str, image_archive: Path, tmp_path: Path
) -> None:
    declared = declared_packages(image_archive)
    pinned = pinned_package(declared)
    control = declared[pinned]
    current = re.search(r"^Version: (\S+)$", control, re.M)
    assert current is not None, control
    older = f"{current.group(1)}~older"  # sorts before it in Debian's order
    (tmp_path / pinned).write_text(
        control.replace(f"Version: {current.group(1)}", f"Version: {older}")
    )
    (tmp_path / "Containerfile").write_text(
        f"FROM {image}\nCOPY {pinned} /var/lib/dpkg/status.d/{pinned}\n"
    )
    tag = "localhost/pcf-api:pinned-older-test"
    engine.run("build", "-q", "-t", tag, "-f", str(tmp_path / "Containerfile"), str(tmp_path))
    try:
        archive = engine.save(tag, tmp_path / "pinned.tar")
    finally:
        engine.run("rmi", "-f", tag, check=False)

    result = check(archive, tmp_path / "report.txt")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{pinned} {older}: newest {current.group(1)}" in result.stderr
    assert re.search(
        rf"^{pinned}\s+\S+\s+\S+\s+BEHIND$", (tmp_path / "report.txt").read_text(), re.M
    )
