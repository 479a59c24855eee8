"""Is every Debian package in the image at the newest version its suite publishes?

    python3 scripts/package_currency.py IMAGE.tar [--report build/scan/package-currency.txt]
        [--mirror http://deb.debian.org/debian] [--security-mirror http://deb.debian.org/debian-security]

Reads the image's ``/var/lib/dpkg/status.d`` (one control paragraph per package, distroless
style) and its ``/etc/os-release`` (the suite, e.g. ``bookworm``), downloads the ``Packages``
indexes of that suite, ``<suite>-updates`` and ``<suite>-security`` for the image's architecture
from the mirrors, and compares each package with the newest version found there (Debian's
ordering, ``dpkg --compare-versions``). Exit 1 when one is behind or missing from every index.
The report lists every package with its version and the newest, then the Python distributions
(their ``*.dist-info``) with their versions.

The mirrors default to the build machine's apt sources, where the image's packages come from.
"""

from __future__ import annotations

import argparse
import email.parser
import lzma
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import image_checks

STATUS_DIR = "var/lib/dpkg/status.d/"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DOWNLOAD_TIMEOUT = 120
DIST_INFO = re.compile(r"(?:^|/)([A-Za-z0-9_.]+)-([^/-]+)\.dist-info/METADATA$")


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    architecture: str


@dataclass(frozen=True)
class Verdict:
    package: Installed
    newest: str | None
    """The newest version in the indexes, None when no index has the package."""

    @property
    def current(self) -> bool:
        return self.newest is not None and not version_lt(self.package.version, self.newest)


def version_lt(a: str, b: str) -> bool:
    """Debian's version order, from dpkg itself."""
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        raise SystemExit("dpkg is needed to compare Debian versions")
    compare = [dpkg, "--compare-versions", a, "lt", b]
    return subprocess.run(compare, check=False).returncode == 0  # noqa: S603 - fixed argv


def paragraphs(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 file (control, status, Packages) as header dicts."""
    parser = email.parser.HeaderParser()
    return [dict(parser.parsestr(block)) for block in re.split(r"\n\s*\n", text) if block.strip()]


def installed(files: dict[str, bytes]) -> list[Installed]:
    """The packages declared in status.d (``<package>``; ``<package>.md5sums`` skipped)."""
    packages = []
    for path, data in sorted(files.items()):
        if not path.startswith(STATUS_DIR) or path.endswith(".md5sums"):
            continue
        for fields in paragraphs(data.decode("utf-8")):
            packages.append(Installed(fields["Package"], fields["Version"], fields["Architecture"]))
    return packages


def os_codename(files: dict[str, bytes]) -> str:
    release = files.get("etc/os-release") or files.get("usr/lib/os-release") or b""
    match = re.search(rb"^VERSION_CODENAME=\"?([a-z]+)\"?$", release, re.M)
    if match is None:
        raise SystemExit("the image's os-release names no VERSION_CODENAME")
    return match.group(1).decode()


def index_urls(codename: str, architecture: str, mirror: str, security: str) -> list[str]:
    path = f"main/binary-{architecture}/Packages.xz"
    return [
        f"{mirror}/dists/{codename}/{path}",
        f"{mirror}/dists/{codename}-updates/{path}",
        f"{security}/dists/{codename}-security/{path}",
    ]


def fetch(url: str) -> str:
    """An index as published now: never cached, the check is about today's versions."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310 - a mirror
        return lzma.decompress(response.read()).decode("utf-8")


def newest_versions(indexes: list[str]) -> dict[str, str]:
    newest: dict[str, str] = {}
    for text in indexes:
        for fields in paragraphs(text):
            name, version = fields.get("Package"), fields.get("Version")
            if name and version and (name not in newest or version_lt(newest[name], version)):
                newest[name] = version
    return newest


def verdicts(packages: list[Installed], newest: dict[str, str]) -> list[Verdict]:
    return [Verdict(package, newest.get(package.name)) for package in packages]


def python_distributions(files: dict[str, bytes]) -> list[tuple[str, str]]:
    found = {match.groups() for path in files if (match := DIST_INFO.search(path))}
    return sorted(found, key=lambda pair: pair[0].lower())


def report(results: list[Verdict], distributions: list[tuple[str, str]], sources: list[str]) -> str:
    lines = ["Debian packages (image version | newest in the indexes below | verdict)", ""]
    width = max((len(r.package.name) for r in results), default=10)
    for result in results:
        verdict = "current" if result.current else "MISSING" if result.newest is None else "BEHIND"
        lines.append(
            f"{result.package.name:<{width}}  {result.package.version:<28}  "
            f"{result.newest or '-':<28}  {verdict}"
        )
    lines += ["", "indexes:", *(f"  {url}" for url in sources), "", "Python distributions:", ""]
    lines += [f"{name} {version}" for name, version in distributions]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("archive", help="the image as a docker-archive tar (podman save)")
    parser.add_argument("--report", type=Path, default=Path("build/scan/package-currency.txt"))
    parser.add_argument("--mirror", default=DEFAULT_MIRROR)
    parser.add_argument("--security-mirror", default=DEFAULT_SECURITY_MIRROR)
    args = parser.parse_args(argv)

    image = image_checks.load(args.archive)
    files = {path: entry.data for path, entry in image.files.items() if entry.kind == "file"}
    packages = installed(files)
    if not packages:
        raise SystemExit(f"{args.archive}: no packages in /{STATUS_DIR}")
    codename = os_codename(files)
    architecture = image.config.get("architecture") or "amd64"
    sources = index_urls(codename, architecture, args.mirror, args.security_mirror)
    results = verdicts(packages, newest_versions([fetch(url) for url in sources]))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(results, python_distributions(files), sources))
    stale = [result for result in results if not result.current]
    for result in stale:
        newest = result.newest or "absent from every index"
        print(f"{result.package.name} {result.package.version}: newest {newest}", file=sys.stderr)
    print(
        f"{len(results) - len(stale)} of {len(results)} Debian packages current ({codename}, "
        f"{architecture}); report in {args.report}"
    )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
