"""Hardening checks on a saved container image (docker-archive or OCI layout from `save`).

    python3 scripts/image_checks.py IMAGE.tar [--json OUT]

Checks, each reported as PASS or FAIL with what it found:
  non-root     the image runs as 65532:65532 and /etc/passwd knows that user without a shell
  no-shell     no shell or multi-call binary (sh, bash, dash, busybox, ...) anywhere
  no-package-manager   no apt, dpkg, pip or setuptools, no dpkg database (status.d stays)
  no-setuid    no setuid or setgid file
  writable     nothing world-writable but /tmp (sticky)
  secrets      no private key, credential file or well-known token pattern in any file,
               including the members of zip files (site-packages.zip, python3NN.zip)
Exits 1 when a check fails. Standard library only.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SHELLS = {
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
    "toybox",
}
PACKAGE_MANAGERS = {
    "apt",
    "apt-get",
    "aptitude",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "pip",
    "pip3",
    "easy_install",
    "apk",
    "yum",
    "dnf",
    "rpm",
    "microdnf",
    "uv",
}
PACKAGE_MANAGER_PACKAGES = ("pip/", "setuptools/", "_distutils_hack/", "pkg_resources/")
SECRET_FILE_NAMES = re.compile(
    r"^(id_(rsa|dsa|ecdsa|ed25519)|\.env|\.netrc|\.git-credentials|credentials|\.pgpass|"
    r".*\.(key|p12|pfx|jks|keystore|kdbx))$"
)
SECRET_PATTERNS = {
    # a key block with a body, not the bare marker a parser keeps as a constant
    "private key": re.compile(
        rb"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----\r?\n(?:[A-Za-z-]+: [^\n]*\r?\n)*\r?\n?"
        rb"[A-Za-z0-9+/=\r\n]{64,}"
    ),
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(rb"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "JWT": re.compile(rb"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}


@dataclass
class Entry:
    path: str
    kind: str  # file, dir, symlink, other
    mode: int
    uid: int
    gid: int
    data: bytes = b""


@dataclass
class Image:
    config: dict
    files: dict[str, Entry] = field(default_factory=dict)


def load(archive_path: str) -> Image:
    with tarfile.open(archive_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        image = Image(config=config)
        for name in manifest[0]["Layers"]:
            data = archive.extractfile(name).read()  # type: ignore[union-attr]
            if data[:2] == b"\x1f\x8b":
                data = zlib.decompress(data, 31)
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                for member in layer:
                    path = member.name.lstrip("./")
                    base = PurePosixPath(path).name
                    if base.startswith(".wh."):
                        gone = str(PurePosixPath(path).parent / base[4:])
                        for existing in [
                            p for p in image.files if p == gone or p.startswith(gone + "/")
                        ]:
                            del image.files[existing]
                        continue
                    kind = (
                        "file"
                        if member.isfile()
                        else "dir"
                        if member.isdir()
                        else "symlink"
                        if member.issym() or member.islnk()
                        else "other"
                    )
                    content = layer.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
                    image.files[path] = Entry(
                        path, kind, member.mode, member.uid, member.gid, content
                    )
    return image


def check_non_root(image: Image) -> list[str]:
    problems = []
    user = image.config.get("config", {}).get("User", "")
    if user != "65532:65532":
        problems.append(f"image user is {user!r}, expected '65532:65532'")
    passwd = image.files.get("etc/passwd")
    if passwd is None:
        return [*problems, "no /etc/passwd"]
    entries = [line.split(":") for line in passwd.data.decode().splitlines() if line]
    nonroot = [e for e in entries if e[2] == "65532"]
    if not nonroot:
        problems.append("/etc/passwd has no uid 65532")
    for e in entries:
        if PurePosixPath(e[6]).name in SHELLS:
            problems.append(f"/etc/passwd gives {e[0]} the shell {e[6]}")
    return problems


def check_no_shell(image: Image) -> list[str]:
    return [f"/{p}" for p in image.files if PurePosixPath(p).name in SHELLS]


def check_no_package_manager(image: Image) -> list[str]:
    found = [
        f"/{p}"
        for p, e in image.files.items()
        if e.kind != "dir"
        and (
            PurePosixPath(p).name in PACKAGE_MANAGERS
            or re.fullmatch(r"pip3\.\d+", PurePosixPath(p).name)
        )
    ]
    found += [f"/{p}" for p in image.files if p in ("var/lib/dpkg/status", "usr/bin/apt")]
    for path, entry in image.files.items():
        if "dist-packages/" in path and path.split("dist-packages/", 1)[1].startswith(
            PACKAGE_MANAGER_PACKAGES
        ):
            found.append(f"/{path}")
        if entry.kind == "file" and path.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(entry.data)) as archive:
                found += [
                    f"/{path}/{n}"
                    for n in archive.namelist()
                    if n.startswith(PACKAGE_MANAGER_PACKAGES)
                ]
    return sorted(set(found))[:20]


def check_no_setuid(image: Image) -> list[str]:
    return [f"/{p} ({e.mode:o})" for p, e in image.files.items() if e.mode & 0o6000]


def check_writable(image: Image) -> list[str]:
    problems = []
    for path, entry in image.files.items():
        if entry.kind == "symlink" or not entry.mode & 0o002:
            continue
        if path.rstrip("/") == "tmp" and entry.mode & 0o1000:
            continue
        problems.append(f"/{path} ({entry.mode:o})")
    return problems


def check_secrets(image: Image) -> list[str]:
    found = []

    def scan(name: str, data: bytes) -> None:
        if SECRET_FILE_NAMES.match(PurePosixPath(name).name):
            found.append(f"{name}: secret-looking file name")
        for label, pattern in SECRET_PATTERNS.items():
            if pattern.search(data):
                found.append(f"{name}: {label}")

    for path, entry in image.files.items():
        if entry.kind != "file":
            continue
        scan(f"/{path}", entry.data)
        if entry.data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(entry.data)) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        scan(f"/{path}/{member.filename}", archive.read(member))
    return found


CHECKS = {
    "non-root": check_non_root,
    "no-shell": check_no_shell,
    "no-package-manager": check_no_package_manager,
    "no-setuid": check_no_setuid,
    "writable": check_writable,
    "secrets": check_secrets,
}


def run(archive_path: str) -> dict[str, list[str]]:
    image = load(archive_path)
    return {name: check(image) for name, check in CHECKS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("archive")
    parser.add_argument("--json", help="also write the findings as JSON to this file")
    args = parser.parse_args(argv)
    results = run(args.archive)
    for name, problems in results.items():
        print(f"{'FAIL' if problems else 'PASS'}  {name}")
        for problem in problems[:20]:
            print(f"        {problem}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
