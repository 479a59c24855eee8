"""Building the image: layer reuse on a source-only change, linters, SBOM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import HS256_SECRET, ROOT, Engine, StartContainer, free_port, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

WARM_IMAGE = "localhost/pcf-api:warm-rebuild-test"


def clean_tree(target: Path) -> Path:
    """The repository as a fresh clone would have it: tracked and new files, nothing ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        relative = raw.decode()
        source = ROOT / relative
        if not source.is_file():  # deleted in the work tree
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)
    return target


def test_a_source_only_change_reuses_the_dependency_layer(
    engine: Engine, image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = clean_tree(tmp_path / "tree")
    init = tree / "src/pcf_api/__init__.py"
    init.write_text(init.read_text() + "# a source-only change\n")
    try:
        output = engine.build("--tag", WARM_IMAGE, cwd=tree)
        built = re.search(r"built \S+ in ([0-9.]+) s \((\d+) steps from cache\)", output)
        assert built, output
        base = engine.inspect(image)["RootFS"]["Layers"]
        warm = engine.inspect(WARM_IMAGE)["RootFS"]["Layers"]
        cold_figures = ROOT / "build" / "image-amd64.json"
        cold = (
            json.loads(cold_figures.read_text()).get("build_seconds")
            if cold_figures.exists()
            else None
        )
        with capsys.disabled():
            print(
                f"\nrebuild after a source-only change: {built.group(1)} s "
                f"({built.group(2)} steps from cache); last full build: {cold} s"
            )
        assert warm[0] == base[0], "the dependency layer was rebuilt"
        assert warm[1] != base[1], "the application layer did not change"
    finally:
        engine.run("rmi", "-f", WARM_IMAGE, check=False)


@pytest.mark.parametrize("containerfile", ["Dockerfile", "scripts/test-python.Containerfile"])
def test_hadolint_reports_nothing(tools: Path, containerfile: str) -> None:
    hadolint = require_tool(tools / "hadolint")
    result = subprocess.run(
        [hadolint, containerfile], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every suppression carries its reason in the comment just above it.
    lines = (ROOT / containerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert lines[number - 1].startswith("#"), (
                f"unexplained suppression on line {number + 1}"
            )


def test_checkov_reports_no_failure(tools: Path) -> None:
    checkov = require_tool(tools / "checkov")
    result = subprocess.run(
        [
            checkov,
            "-f",
            "Dockerfile",
            "--framework",
            "dockerfile",
            "--skip-download",
            "--output",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    assert report["results"]["failed_checks"] == [], report["results"]["failed_checks"]
    assert report["summary"]["passed"] > 50
    for skipped in report["results"].get("skipped_checks", []):
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped


def test_the_workflow_and_the_scripts_lint_clean(tools: Path) -> None:
    actionlint = require_tool(tools / "actionlint")
    result = subprocess.run(
        [actionlint, ".github/workflows/image.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if shutil.which("shellcheck"):
        scripts = [
            "scripts/build-image.sh",
            "scripts/scan-image.sh",
            "scripts/debian-base.sh",
            "scripts/test-python.sh",
            "scripts/qemu-binfmt.sh",
            "scripts/lib/engine.sh",
        ]
        result = subprocess.run(
            ["shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout


def test_the_sbom_lists_the_debian_and_python_packages(
    tools: Path, image_archive: Path, tmp_path: Path
) -> None:
    syft = require_tool(tools / "syft")
    sbom = tmp_path / "sbom.spdx.json"
    subprocess.run(
        [syft, "scan", f"docker-archive:{image_archive}", "-q", "-o", f"spdx-json={sbom}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    packages = json.loads(sbom.read_text())["packages"]
    purls = {
        ref["referenceLocator"].split("@")[0]
        for package in packages
        for ref in package.get("externalRefs", [])
        if ref.get("referenceType") == "purl"
    }
    assert any(re.fullmatch(r"pkg:deb/debian/python3\.\d+-minimal", purl) for purl in purls), purls
    for expected in (
        "pkg:deb/debian/libc6",
        "pkg:pypi/pcf-api",
        "pkg:pypi/sqlalchemy",
        "pkg:pypi/cryptography",
    ):
        assert expected in purls, sorted(purls)


DEBIAN_13_IMAGE = "localhost/pcf-api:dev-trixie"
# Debian 13's image is over the 50 MB budget (docs/container.md, "Debian 13"): this test guards
# that the suite-generic build keeps working, not the size.
DEBIAN_13_MAX_MB = "60"


def test_the_base_image_argument_builds_the_image_from_debian_13_and_its_python_3_13(
    engine: Engine, start: StartContainer
) -> None:
    if not engine.image_exists(DEBIAN_13_IMAGE):
        local = os.environ.get("PCF_LOCAL_BASE") == "1"
        base = "localhost/debian:trixie-slim" if local else "debian:trixie-slim"
        engine.build("--tag", DEBIAN_13_IMAGE, env={"BASE_IMAGE": base, "MAX_MB": DEBIAN_13_MAX_MB})
    probe = (
        "import platform, ssl, sqlite3, zoneinfo, anyio, pcf_api.composition, pcf_api.server\n"
        "from cryptography.hazmat.backends.openssl.backend import backend\n"
        "print(platform.python_version(), ssl.OPENSSL_VERSION, backend.openssl_version_text())\n"
        "print(open('/etc/os-release').read())\n"
    )
    result = engine.run(
        "run", "--rm", "--entrypoint", "/usr/bin/python3", DEBIAN_13_IMAGE, "-I", "-c", probe
    )
    first, os_release = result.stdout.split("\n", 1)
    python, ssl_version, crypto_version = re.split(r" (?=OpenSSL)", first)
    assert python.startswith("3.13."), first
    assert ssl_version == crypto_version, first  # cryptography on the suite's OpenSSL
    assert "VERSION_CODENAME=trixie" in os_release, os_release
    # It serves: the whole application loads and answers its readiness probe, hardened.
    port = free_port()
    container = start(
        DEBIAN_13_IMAGE,
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--tmpfs", "/tmp", "-p", f"127.0.0.1:{port}:8080",
        "-e", "PCF_DATABASE__URL=sqlite+aiosqlite:////tmp/notes.db",
        "-e", "PCF_DATABASE__AUTO_MIGRATE=true",
        "-e", f"PCF_AUTH__HS256_SECRET={HS256_SECRET}",
    )  # fmt: skip
    container.wait_until_healthy(f"http://127.0.0.1:{port}/health/ready")
