"""Size report of a saved container image: layers, compressed size, every megabyte accounted for.

    python3 scripts/image_report.py IMAGE.tar [--max-mb 50] [--max-compressed-mb 50] [--json OUT]

IMAGE.tar is what `docker save` or `podman save` writes (docker-archive or OCI layout). Sizes
are in MB (10^6 bytes). "Uncompressed" is the sum of the layer tars, which is what `docker
images` shows; "compressed" is each layer gzipped at level 6, which is what a registry stores.
Exits 1 when a budget is exceeded. Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import re
import sys
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath

# Any Python 3 the image carries (Debian 12's 3.11, Debian 13's 3.13, ...).
SITE = re.compile(r"usr/local/lib/python3\.\d+/dist-packages/")
SITE_ZIP = re.compile(SITE.pattern + r"site-packages\.zip")
STDLIB_ZIP = re.compile(r"usr/lib/python3\d+\.zip")
STDLIB = re.compile(r"usr/lib/python3\.\d+/")
INTERPRETER = re.compile(r"usr/bin/python3\.\d+")
MB = 1_000_000


def gzip_size(data: bytes) -> int:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return len(compressor.compress(data)) + len(compressor.flush())


def read_layers(archive: tarfile.TarFile) -> list[tuple[str, bytes]]:
    manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    layers = []
    for name in manifest[0]["Layers"]:
        data = archive.extractfile(name).read()  # type: ignore[union-attr]
        if data[:2] == b"\x1f\x8b":
            data = zlib.decompress(data, 31)
        layers.append((name, data))
    return layers


def layer_files(data: bytes) -> tuple[dict[str, tuple[int, bytes | None]], list[str]]:
    """Regular files (size, content for the zips) and whiteouts of one layer tar."""
    files: dict[str, tuple[int, bytes | None]] = {}
    whiteouts = []
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        for member in layer:
            path = member.name.lstrip("./")
            base = PurePosixPath(path).name
            if base.startswith(".wh."):
                whiteouts.append(str(PurePosixPath(path).parent / base[4:]))
                continue
            if member.isfile():
                keep = bool(SITE_ZIP.fullmatch(path) or STDLIB_ZIP.fullmatch(path))
                content = layer.extractfile(member).read() if keep else None  # type: ignore[union-attr]
                files[path] = (member.size, content)
            elif member.issym() or member.islnk():
                files[path] = (0, None)
    return files, whiteouts


FIXED_CATEGORIES = (
    (lambda p: bool(STDLIB_ZIP.fullmatch(p)), "stdlib: python3NN.zip"),
    (lambda p: bool(STDLIB.match(p)) and "/lib-dynload/" in p, "stdlib: lib-dynload"),
    (lambda p: bool(STDLIB.match(p)), "stdlib: other files"),
    (lambda p: bool(INTERPRETER.fullmatch(p)), "interpreter: /usr/bin/python3.N"),
    (lambda p: p.startswith("usr/local/bin/"), "application (pcf_api)"),
    (lambda p: p.startswith("usr/share/doc/"), "Debian copyright files"),
    (lambda p: p.startswith("var/lib/dpkg/"), "Debian package declarations"),
)


def site_category(rest: str) -> str:
    top = rest.split("/", 1)[0]
    if top.endswith(".dist-info"):
        return "site-packages: metadata (*.dist-info)"
    if top == "site-packages.zip":
        return "site-packages: zip (see below)"
    if top.startswith("pcf_api"):
        return "application (pcf_api)"
    return f"site-packages: {top.split('.', 1)[0]} (files)"


def category(path: str) -> str:
    """Where a file's bytes count in the report."""
    site = SITE.match(path)
    if site:
        return site_category(path[site.end() :])
    for matches, label in FIXED_CATEGORIES:
        if matches(path):
            return label
    if ".so" in path and "lib/" in path:
        return f"shared library: {PurePosixPath(path).name.split('.so')[0]}.so"
    return "other: " + path


def zip_breakdown(content: bytes) -> dict[str, tuple[int, int]]:
    """Per top-level package: (bytes stored in the zip, bytes once unpacked)."""
    sizes: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for info in archive.infolist():
            top = info.filename.split("/", 1)[0].split(".", 1)[0]
            # local header (30) + central directory entry (46) + the name twice
            sizes[top][0] += info.compress_size + 76 + 2 * len(info.filename)
            sizes[top][1] += info.file_size
    return {key: (value[0], value[1]) for key, value in sizes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("archive")
    parser.add_argument("--max-mb", type=float, help="budget for the uncompressed size")
    parser.add_argument("--max-compressed-mb", type=float, help="budget for the compressed size")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--build-seconds", type=float, help="recorded in the JSON figures")
    args = parser.parse_args(argv)

    with tarfile.open(args.archive) as archive:
        layers = read_layers(archive)

    final: dict[str, tuple[int, bytes | None]] = {}
    layer_rows = []
    total_tar = total_gz = 0
    for index, (_name, data) in enumerate(layers):
        files, whiteouts = layer_files(data)
        for path in whiteouts:
            for existing in [p for p in final if p == path or p.startswith(path + "/")]:
                del final[existing]
        final.update(files)
        compressed = gzip_size(data)
        total_tar += len(data)
        total_gz += compressed
        layer_rows.append((index + 1, len(data), compressed, len(files)))

    print_layers(layer_rows, total_tar, total_gz)
    groups = print_groups(final)
    zips = print_zips(final)
    print(f"\nImage size: {total_tar / MB:.2f} MB uncompressed, {total_gz / MB:.2f} MB compressed")
    if args.json:
        write_json(
            args,
            total_tar=total_tar,
            total_gz=total_gz,
            layer_rows=layer_rows,
            groups=groups,
            zips=zips,
        )
    failed = False
    if args.max_mb is not None and total_tar > args.max_mb * MB:
        print(f"FAIL: uncompressed {total_tar / MB:.2f} MB exceeds the {args.max_mb:g} MB budget")
        failed = True
    if args.max_compressed_mb is not None and total_gz > args.max_compressed_mb * MB:
        print(
            f"FAIL: compressed {total_gz / MB:.2f} MB exceeds the "
            f"{args.max_compressed_mb:g} MB budget"
        )
        failed = True
    return 1 if failed else 0


def print_layers(
    layer_rows: list[tuple[int, int, int, int]], total_tar: int, total_gz: int
) -> None:
    print("Layers (uncompressed tar / gzip -6 / files):")
    for number, size, compressed, count in layer_rows:
        print(f"  layer {number}: {size / MB:8.2f} MB  {compressed / MB:7.2f} MB  {count:6d} files")
    print(f"  total:   {total_tar / MB:8.2f} MB  {total_gz / MB:7.2f} MB")


def print_groups(final: dict[str, tuple[int, bytes | None]]) -> dict[str, int]:
    groups: dict[str, int] = collections.Counter()
    for path, (size, _) in final.items():
        groups[category(path)] += size
    file_bytes = sum(groups.values())
    print(f"\nWhere the {file_bytes / MB:.2f} MB of file content goes (largest first):")
    for name, size in sorted(groups.items(), key=lambda item: -item[1]):
        if size >= 20_000:
            print(f"  {size / MB:7.2f} MB  {name}")
    small = sum(size for size in groups.values() if size < 20_000)
    print(f"  {small / MB:7.2f} MB  everything else (items under 0.02 MB each)")
    return groups


def print_zips(final: dict[str, tuple[int, bytes | None]]) -> dict[str, dict[str, tuple[int, int]]]:
    zips = {}
    for path, (_, content) in sorted(final.items()):
        if content is None or not (SITE_ZIP.fullmatch(path) or STDLIB_ZIP.fullmatch(path)):
            continue
        label = PurePosixPath(path).name
        breakdown = zip_breakdown(content)
        zips[label] = breakdown
        print(f"\n{label} by top-level package (stored / unpacked, largest first):")
        for name, (stored, unpacked) in sorted(breakdown.items(), key=lambda i: -i[1][0])[:25]:
            print(f"  {stored / MB:7.3f} MB  {unpacked / MB:7.3f} MB  {name}")
    return zips


def write_json(
    args: argparse.Namespace,
    *,
    total_tar: int,
    total_gz: int,
    layer_rows: list[tuple[int, int, int, int]],
    groups: dict[str, int],
    zips: dict[str, dict[str, tuple[int, int]]],
) -> None:
    figures = {
        "build_seconds": args.build_seconds,
        "uncompressed_mb": round(total_tar / MB, 2),
        "compressed_mb": round(total_gz / MB, 2),
        "file_content_mb": round(sum(groups.values()) / MB, 2),
        "layers": [
            {"uncompressed_mb": round(s / MB, 3), "compressed_mb": round(c / MB, 3)}
            for _, s, c, _ in layer_rows
        ],
        "groups_mb": {k: round(v / MB, 3) for k, v in groups.items()},
        "zips_mb": {
            label: {k: round(v[0] / MB, 3) for k, v in breakdown.items()}
            for label, breakdown in zips.items()
        },
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    sys.exit(main())
