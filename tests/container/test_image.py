"""The image as built: its configuration, size budget, contents and declarations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.scripts import load_script

from .conftest import ROOT, Engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

# The ceilings of the image issue; scripts/build-image.sh enforces the same by default.
MAX_UNCOMPRESSED_MB = 50
MAX_COMPRESSED_MB = 50


def test_configuration_is_what_the_specification_says(engine: Engine, image: str) -> None:
    inspected = engine.inspect(image)
    config = inspected["Config"]
    assert config["Entrypoint"] == ["pcf-api"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "65532:65532"
    assert "8080/tcp" in config["ExposedPorts"]
    assert "/tmp" in config["Volumes"]
    assert "PCF_ENVIRONMENT=production" in config["Env"]
    health = config.get("Healthcheck") or inspected["Healthcheck"]  # docker | podman
    assert health["Test"] == ["CMD", "pcf-api", "healthcheck"]
    seconds = 1_000_000_000
    assert (health["Interval"], health["Timeout"], health["StartPeriod"], health["Retries"]) == (
        30 * seconds,
        5 * seconds,
        10 * seconds,
        3,
    )
    labels = config["Labels"]
    for key in ("source", "version", "revision", "licenses"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_size_is_within_budget(
    image_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = load_script(ROOT / "scripts" / "image_report.py")
    figures_file = tmp_path / "figures.json"
    code = report.main(
        [
            str(image_archive),
            "--max-mb",
            str(MAX_UNCOMPRESSED_MB),
            "--max-compressed-mb",
            str(MAX_COMPRESSED_MB),
            "--json",
            str(figures_file),
        ]
    )
    output = capsys.readouterr().out
    figures = json.loads(figures_file.read_text())
    with capsys.disabled():
        print(
            f"\nimage: {figures['uncompressed_mb']} MB uncompressed, "
            f"{figures['compressed_mb']} MB compressed, layers {figures['layers']}"
        )
    assert code == 0, output
    # Two file layers: dependencies (rarely changes) and the application (every commit).
    assert len(figures["layers"]) == 2
    assert figures["layers"][1]["uncompressed_mb"] < 3


def test_hardening_checks_pass(image_archive: Path) -> None:
    findings = load_script(ROOT / "scripts" / "image_checks.py").run(str(image_archive))
    assert findings == {name: [] for name in findings}, findings


def test_every_shipped_debian_package_is_declared(image_archive: Path) -> None:
    checks = load_script(ROOT / "scripts" / "image_checks.py")
    image = checks.load(str(image_archive))
    status = {
        Path(path).name: entry.data.decode()
        for path, entry in image.files.items()
        if path.startswith("var/lib/dpkg/status.d/") and entry.kind == "file"
    }
    declared = {name: text for name, text in status.items() if not name.endswith(".md5sums")}
    # Each package also lists its files in the image (distroless' <package>.md5sums), so that
    # scanners attribute them: Debian's cryptography is python3-cryptography's, not a PyPI one.
    for package in declared:
        listed = [line.split("  ", 1)[1] for line in status[f"{package}.md5sums"].splitlines()]
        assert f"usr/share/doc/{package}/copyright" in listed, package
        for path in listed:  # a file, or a hard link to one of identical content
            assert image.files[path].kind in ("file", "symlink"), (package, path)
    crypto = status["python3-cryptography.md5sums"]
    assert re.search(r"/cryptography-[0-9.]+\.dist-info/METADATA$", crypto, re.M), crypto
    assert "cryptography/hazmat/bindings/_rust.abi3.so" in crypto
    # The suite's Python (Debian 12: 3.11, Debian 13: 3.13) and OpenSSL (libssl3t64 since 13).
    python = next(m[1] for name in declared if (m := re.fullmatch(r"python(3\.\d+)-minimal", name)))
    assert f"usr/bin/python{python}\n" in status[f"python{python}-minimal.md5sums"]
    assert image.files["usr/bin/python3"].kind == "symlink"
    assert {"libssl3", "libssl3t64"} & set(declared), sorted(declared)
    for package in (
        "libc6",
        f"python{python}-minimal",
        f"libpython{python}-stdlib",
        "base-files",
        "python3-cryptography",  # replaces the cryptography wheel (prune.toml from_debian)
        "python3-cffi-backend",
    ):
        assert package in declared, sorted(declared)
        assert f"Package: {package}\n" in declared[package]
        assert "Status: install ok installed" in declared[package]
        assert "\nVersion: " in declared[package]
    # A copyright file for each declared package, and the distribution's identity for scanners.
    for package in declared:
        assert f"usr/share/doc/{package}/copyright" in image.files, package
    assert "etc/os-release" in image.files
    # Every Python distribution in the image keeps its metadata, the application's included.
    site = f"usr/local/lib/python{python}/dist-packages/"
    metadata = {
        p.split("/")[-2] for p in image.files if p.startswith(site) and p.endswith("/METADATA")
    }
    names = {
        m.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-") for m in metadata
    }
    for dist in (
        "pcf-api",
        "sqlalchemy",
        "cryptography",
        "pydantic-core",
        "uvicorn",
        "strawberry-graphql",
    ):
        assert dist in names, sorted(names)
    # ...and nothing is declared that the image left out.
    assert "watchfiles" not in names
    assert "pyyaml" not in names


def test_there_is_no_shell_to_run(engine: Engine, image: str) -> None:
    for shell in ("/bin/sh", "sh", "/bin/bash"):
        result = engine.run("run", "--rm", "--entrypoint", shell, image, "-c", "true", check=False)
        assert result.returncode != 0, shell


def test_python_modules_load_from_the_pruned_tree(engine: Engine, image: str) -> None:
    """Compiled extensions (not their pure-Python fallbacks), TLS, SQLite, JWT crypto, OTLP.

    JWT crypto: RS256, ES256 and EdDSA tokens signed and verified through JWKs (what a JWKS
    endpoint serves), with cryptography on the same OpenSSL as Python's ssl module."""
    probe = (
        "import platform, ssl, sqlite3, hashlib, decimal, zoneinfo, json\n"
        "import uvloop, orjson, httptools, asyncpg, greenlet, pydantic_core\n"
        "import sqlalchemy.engine._row_cy as row\n"
        "import jwt\n"
        "from jwt.algorithms import RSAAlgorithm, ECAlgorithm, OKPAlgorithm\n"
        "from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa\n"
        "from cryptography.hazmat.backends.openssl.backend import backend as openssl\n"
        "keys = {'RS256': (RSAAlgorithm, rsa.generate_private_key(65537, 2048)),\n"
        "  'ES256': (ECAlgorithm, ec.generate_private_key(ec.SECP256R1())),\n"
        "  'EdDSA': (OKPAlgorithm, ed25519.Ed25519PrivateKey.generate())}\n"
        "verified = []\n"
        "for alg, (cls, key) in keys.items():\n"
        "    jwk = jwt.PyJWK(cls.to_jwk(key.public_key(), as_dict=True), alg)\n"
        "    token = jwt.encode({'sub': 'probe'}, key, algorithm=alg)\n"
        "    if jwt.decode(token, jwk.key, algorithms=[alg]) == {'sub': 'probe'}:\n"
        "        verified.append(alg)\n"
        "    head, sig = token.rsplit('.', 1)\n"
        "    bad = head + '.' + sig[:5] + ('B' if sig[5] == 'A' else 'A') + sig[6:]\n"
        "    try:\n"
        "        jwt.decode(bad, jwk.key, algorithms=[alg])\n"
        "    except jwt.InvalidSignatureError:\n"
        "        verified.append(alg + ' tampered refused')\n"
        "import pcf_api.app, pcf_api.server, pcf_api.store.migrate\n"
        "import strawberry.http.ides as ides\n"
        "import certifi\n"
        "print(json.dumps({'row_compiled': row._is_compiled(), 'machine': platform.machine(),\n"
        "  'ide': len(ides.get_graphql_ide_html()), 'ca': open(certifi.where()).read(30),\n"
        "  'zone': str(zoneinfo.ZoneInfo('Europe/Berlin')), 'openssl': ssl.OPENSSL_VERSION,\n"
        "  'crypto_openssl': openssl.openssl_version_text(), 'jwt': verified}))\n"
    )
    result = engine.run(
        "run",
        "--rm",
        "--entrypoint",
        "/usr/bin/python3",
        image,
        "-I",
        "-W",
        "error",
        "-c",
        probe,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["row_compiled"] is True
    assert found["ide"] > 1000
    assert found["ca"].startswith("-----BEGIN CERTIFICATE")
    assert found["zone"] == "Europe/Berlin"
    assert found["jwt"] == [
        "RS256",
        "RS256 tampered refused",
        "ES256",
        "ES256 tampered refused",
        "EdDSA",
        "EdDSA tampered refused",
    ]
    # One OpenSSL in the image: cryptography uses the libcrypto that Python's ssl loads.
    assert found["crypto_openssl"] == found["openssl"]
