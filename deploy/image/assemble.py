"""Assemble the runtime root file system of the pcf-api image (run by the Dockerfile's builder).

The builder runs on the build machine's own architecture and assembles a root file system for
the target architecture from Debian packages and wheels of that architecture, so an arm64 image
builds without emulating the whole build. Three steps, each a subcommand:

    deps     site-packages: drop what the service never imports, strip extension modules, put
             every pure-Python module (compiled, sourceless) into site-packages.zip, keep
             extension modules, package metadata and path-bound packages as files
    runtime  the interpreter, a pruned and zipped standard library, the shared libraries that
             the interpreter and every kept extension module load (found with readelf), CA
             certificates, passwd/group, /tmp, and a dpkg status.d entry plus the copyright
             file of each Debian package whose files are copied in
    app      the application package (sources and hash-checked bytecode) and the `pcf-api`
             entry point

Standard library only: it runs under the builder's Debian python3.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

PY = "3.11"
PYTAG = "311"
STDLIB = Path(f"usr/lib/python{PY}")
STDLIB_ZIP = Path(f"usr/lib/python{PYTAG}.zip")
SITE = Path(f"usr/local/lib/python{PY}/dist-packages")
SITE_ZIP_NAME = "site-packages.zip"
NATIVE_FINDER = "_pcf_native"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LIB_DIRS = ("lib/{t}", "usr/lib/{t}", "lib", "usr/lib")

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnonroot:x:65532:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


def log(message: str) -> None:
    print(f"assemble: {message}", flush=True)


def load_config(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# shared helpers


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def compile_to(source: Path, target: Path, display: str, optimize: int) -> None:
    """Compile one module to a sourceless .pyc (loaded whatever the interpreter's -O level)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(
        str(source),
        cfile=str(target),
        dfile=display,
        doraise=True,
        optimize=optimize,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def write_zip(zip_path: Path, entries: list[tuple[str, Path]]) -> None:
    """A deterministic deflated zip: sorted entries, fixed timestamps, fixed permissions."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        directories: set[str] = set()
        for name, source in sorted(entries):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth]) + "/"
                if directory not in directories:
                    directories.add(directory)
                    info = zipfile.ZipInfo(directory, ZIP_TIME)
                    info.external_attr = (0o40755 << 16) | 0x10
                    zf.writestr(info, b"")
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, source.read_bytes(), compresslevel=9)


def zip_tree(root: Path, zip_path: Path, optimize: int, display_root: str, workdir: Path) -> None:
    """Compile every .py below root into workdir and zip the .pyc files with the data files."""
    entries: list[tuple[str, Path]] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path.is_symlink() and not path.exists():
            continue
        relative = path.relative_to(root).as_posix()
        if path.suffix == ".py":
            compiled = workdir / (relative + "c")
            compile_to(path, compiled, f"{display_root}/{relative}", optimize)
            entries.append((relative + "c", compiled))
        else:
            entries.append((relative, path))
    write_zip(zip_path, entries)


def copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(os.readlink(source), target)
    else:
        shutil.copy2(source, target)


def set_modes(root: Path) -> None:
    """Root-owned, world-readable, nothing writable but /tmp, no setuid or setgid bit anywhere."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            wanted = 0o755
        elif mode & 0o111:
            wanted = 0o755
        else:
            wanted = 0o644
        os.chmod(path, wanted)
        try:
            os.chown(path, 0, 0)
        except PermissionError:  # a rootless builder maps ids itself
            pass
    if (root / "tmp").is_dir():
        os.chmod(root / "tmp", 0o1777)


def stripper(arch: str) -> str:
    return f"{TRIPLETS[arch]}-strip"


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


# --------------------------------------------------------------------------------------------
# deps: site-packages


def read_record(dist_info: Path) -> list[str]:
    record = dist_info / "RECORD"
    if not record.exists():
        return []
    return [line.split(",", 1)[0] for line in record.read_text(encoding="utf-8").splitlines() if line]


def dist_name(dist_info: Path) -> str:
    for line in (dist_info / "METADATA").read_text(encoding="utf-8").splitlines():
        if line.startswith("Name:"):
            return re.sub(r"[-_.]+", "-", line.split(":", 1)[1].strip()).lower()
    raise SystemExit(f"no Name in {dist_info}/METADATA")


def cmd_deps(args: argparse.Namespace) -> None:
    config = load_config(args.config)["site-packages"]
    site: Path = args.site
    out: Path = args.out / SITE
    out.mkdir(parents=True, exist_ok=True)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    dists = {dist_name(d): d for d in site.glob("*.dist-info")}
    for name, reason in config["drop_distributions"].items():
        dist_info = dists.pop(name, None)
        if dist_info is None:
            raise SystemExit(f"drop_distributions names {name!r}, which is not installed")
        for file in read_record(dist_info):
            target = (site / file).resolve()
            if target.is_relative_to(site.resolve()) and target.exists():
                remove(target)
        remove(dist_info)
        log(f"dropped distribution {name}: {reason}")
    for relative in config["drop"]["paths"]:
        for path in sorted(site.glob(relative)) if "*" in relative else [site / relative]:
            if path.exists() or path.is_symlink():
                remove(path)
    globs = config["drop"]["globs"]
    for path in sorted(site.rglob("*"), reverse=True):
        if (path.exists() or path.is_symlink()) and matches(path.name, globs):
            remove(path)
    # Empty directories left behind by the removals.
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()

    for relative, link in config.get("symlinks", {}).items():
        path = site / relative
        if not path.exists():
            raise SystemExit(f"symlinks names {relative}, which is not installed")
        path.unlink()
        path.symlink_to(link)

    on_disk = set(config["on_disk"])
    data_on_disk = tuple(config["data_on_disk"])
    file_modules = {
        name.replace(".", "/") + ".py": name for name in config["file_modules"]
    }
    modules: dict[str, tuple[str, bool]] = {}  # found by the finder: name -> (file, extension?)
    zipped = work / "zip-src"
    remove(zipped)
    for entry in sorted(site.iterdir()):
        if entry.name.endswith(".dist-info"):
            copy_metadata(entry, out / entry.name)
            continue
        if entry.name in on_disk or entry.name.endswith(".libs"):
            shutil.copytree(entry, out / entry.name, symlinks=True)
            continue
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        for file in files:
            relative = file.relative_to(site)
            posix = relative.as_posix()
            if file.suffix == ".so" or ".so." in file.name:
                copy_file(file, out / relative)
                if file.suffix == ".so" and len(relative.parts) > 1:
                    name = ".".join([*relative.parts[:-1], file.name.split(".", 1)[0]])
                    modules[name] = (posix, True)
            elif posix in file_modules:
                target = out / relative.with_suffix(".pyc")
                compile_to(file, target, f"/{SITE}/{posix}", config["optimize"])
                modules[file_modules[posix]] = (target.relative_to(out).as_posix(), False)
            elif posix.startswith(data_on_disk):
                copy_file(file, out / relative)
            else:
                copy_file(file, zipped / relative)
    # A compiled module's pure-Python twin (Cython "pure mode" sources) would shadow it in the
    # zip, which the standard finders search first: the compiled one must be what loads.
    for name, (relative, extension) in modules.items():
        if extension:
            twin = zipped / Path(relative).parent / (name.rsplit(".", 1)[-1] + ".py")
            if twin.exists():
                twin.unlink()

    # Modules of zipped packages that must be files: a meta-path finder maps each to its file.
    finder = zipped / f"{NATIVE_FINDER}.py"
    finder.write_text(native_finder_source(modules), encoding="utf-8")
    (out / f"{SITE_ZIP_NAME}.pth").write_text(
        f"{SITE_ZIP_NAME}\nimport {NATIVE_FINDER}\n", encoding="utf-8"
    )
    zip_tree(zipped, out / SITE_ZIP_NAME, config["optimize"], f"/{SITE}", work / "zip-pyc")

    # Packages kept as files are compiled sourceless in place.
    for package in on_disk:
        root = out / package
        for source in sorted(root.rglob("*.py")):
            relative = source.relative_to(out).as_posix()
            compile_to(source, source.with_suffix(".pyc"), f"/{SITE}/{relative}", config["optimize"])
            source.unlink()

    strip_all(out, args.arch)
    log(f"site-packages: {len(modules)} file modules of zipped packages, zip "
        f"{(out / SITE_ZIP_NAME).stat().st_size / 1e6:.1f} MB")


def copy_metadata(source: Path, target: Path) -> None:
    """A distribution's metadata without RECORD (it lists files the pruning removed) and without
    the long description (the README); the headers scanners and importlib.metadata read stay."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("RECORD"))
    metadata = target / "METADATA"
    text = metadata.read_text(encoding="utf-8")
    kept, in_description = [], False
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith("Description:"):
            in_description = True
        elif not (in_description and line[:1] in (" ", "\t", "|")):
            in_description = False
            kept.append(line)
    metadata.write_text("\n".join(kept) + "\n", encoding="utf-8")


def native_finder_source(modules: dict[str, tuple[str, bool]]) -> str:
    lines = "".join(
        f"    {name!r}: ({path!r}, {extension!r}),\n"
        for name, (path, extension) in sorted(modules.items())
    )
    return f'''"""Modules of packages inside {SITE_ZIP_NAME} that must be files (generated at image build).

zipimport cannot load a shared library, and a few modules open files next to themselves, so
these stay files under /{SITE}; this finder, asked after the standard ones, maps each module
name to its file.
"""

import sys
from importlib.machinery import ExtensionFileLoader, SourcelessFileLoader
from importlib.util import spec_from_file_location

_ROOT = "/{SITE}/"
_MODULES = {{
{lines}}}


class FileModuleFinder:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        found = _MODULES.get(fullname)
        if found is None:
            return None
        location = _ROOT + found[0]
        loader = (ExtensionFileLoader if found[1] else SourcelessFileLoader)(fullname, location)
        return spec_from_file_location(fullname, location, loader=loader)


if FileModuleFinder not in sys.meta_path:
    sys.meta_path.append(FileModuleFinder)
'''


def strip_all(root: Path, arch: str) -> None:
    targets = [
        str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and ".so" in p.name
        and is_elf(p)
    ]
    if targets:
        subprocess.run([stripper(arch), "--strip-unneeded", *targets], check=True)


# --------------------------------------------------------------------------------------------
# runtime: interpreter, standard library, shared libraries, Debian metadata


class Packages:
    """Debian packages extracted side by side, each remembering its control data."""

    def __init__(self, debs: Path, stage: Path, wanted: list[str]) -> None:
        self.roots: dict[str, Path] = {}
        self.control: dict[str, str] = {}
        self.used: set[str] = set()
        for deb in sorted(debs.glob("*.deb")):
            name = subprocess.run(
                ["dpkg-deb", "-f", str(deb), "Package"], check=True, capture_output=True, text=True
            ).stdout.strip()
            if name not in wanted:
                continue
            root = stage / name
            remove(root)
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            self.roots[name] = root
            self.control[name] = subprocess.run(
                ["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True
            ).stdout
        missing = sorted(set(wanted) - set(self.roots))
        if missing:
            raise SystemExit(f"Debian packages not downloaded: {', '.join(missing)}")

    def find(self, relative: str) -> tuple[str, Path] | None:
        for name, root in self.roots.items():
            path = root / relative
            if path.exists() or path.is_symlink():
                return name, path
        return None

    def take(self, relative: str, out: Path) -> str:
        """Copy one path (following a chain of symlinks, each kept as a symlink) into out."""
        found = self.find(relative)
        if found is None:
            raise SystemExit(f"no Debian package provides /{relative}")
        name, path = found
        self.used.add(name)
        target = out / relative
        copy_file(path, target)
        if path.is_symlink():
            link = os.readlink(path)
            resolved = (Path("/" + relative).parent / link) if not link.startswith("/") else Path(link)
            self.take(os.path.normpath(resolved).lstrip("/"), out)
        return name


def elf_info(path: Path, arch: str) -> tuple[list[str], list[str], str | None]:
    """NEEDED entries, RUNPATH/RPATH directories and the program interpreter of an ELF file."""
    readelf = f"{TRIPLETS[arch]}-readelf"
    dynamic = subprocess.run(
        [readelf, "-dW", str(path)], check=True, capture_output=True, text=True
    ).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    runpath = []
    for found in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.+?)\]", dynamic):
        runpath.extend(found.split(":"))
    headers = subprocess.run(
        [readelf, "-lW", str(path)], check=True, capture_output=True, text=True
    ).stdout
    interp = re.search(r"Requesting program interpreter: (.+?)\]", headers)
    return needed, runpath, interp.group(1) if interp else None


def resolve_libraries(out: Path, packages: Packages, arch: str) -> list[str]:
    """Copy in every shared library that a kept ELF file needs, transitively."""
    search = [d.format(t=TRIPLETS[arch]) for d in LIB_DIRS]
    queue = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]
    seen: set[Path] = set()
    copied: list[str] = []
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        needed, runpath, interp = elf_info(path, arch)
        if interp:
            relative = interp.lstrip("/")
            if not (out / relative).exists():
                packages.take(relative, out)
                copied.append(relative)
                queue.append((out / relative).resolve())
        for library in needed:
            local = [
                Path(d.replace("$ORIGIN", str(path.parent))) / library
                for d in runpath if "$ORIGIN" in d
            ]
            if any(candidate.exists() for candidate in local):
                continue
            if any((out / d / library).exists() for d in search):
                continue
            for directory in search:
                relative = f"{directory}/{library}"
                if packages.find(relative):
                    packages.take(relative, out)
                    copied.append(relative)
                    queue.append((out / relative).resolve())
                    break
            else:
                raise SystemExit(f"{path.relative_to(out)} needs {library}: no package provides it")
    return copied


def cmd_runtime(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    out: Path = args.out
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    wanted = [
        line.strip()
        for line in args.packages.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packages = Packages(args.debs, work / "stage", wanted)
    stdlib_config = config["stdlib"]

    # The interpreter.
    packages.take(f"usr/bin/python{PY}", out)

    # The standard library: merge the two packages' trees, prune, keep lib-dynload as files,
    # zip the rest (sourceless bytecode) into the path entry Python always looks at.
    merged = work / "stdlib"
    remove(merged)
    for name in (f"libpython{PY}-minimal", f"libpython{PY}-stdlib"):
        tree = packages.roots[name] / STDLIB
        if tree.exists():
            shutil.copytree(tree, merged, symlinks=True, dirs_exist_ok=True)
            packages.used.add(name)
    for name in stdlib_config["drop"]:
        for candidate in (merged / name, merged / f"{name}.py"):
            if candidate.exists() or candidate.is_symlink():
                remove(candidate)
    for relative in stdlib_config["drop_paths"]:
        if (merged / relative).exists():
            remove(merged / relative)
    for path in sorted(merged.rglob("*"), reverse=True):
        if path.name == "__pycache__" or path.is_symlink() and not path.exists():
            remove(path)
    dynload = merged / "lib-dynload"
    for module in sorted(dynload.glob("*.so")):
        if module.name.split(".", 1)[0] not in stdlib_config["drop_dynload"]:
            copy_file(module, out / STDLIB / "lib-dynload" / module.name)
    remove(dynload)
    # getpath looks for os.py or os.pyc under the prefix to find the standard library.
    compile_to(merged / "os.py", out / STDLIB / "os.pyc", f"/{STDLIB}/os.py", stdlib_config["optimize"])
    zip_tree(merged, out / STDLIB_ZIP, stdlib_config["optimize"], f"/{STDLIB}", work / "stdlib-pyc")
    (out / SITE).mkdir(parents=True, exist_ok=True)

    # Shared libraries for the interpreter and every extension module (site-packages included).
    copied = resolve_libraries(out, packages, args.arch)
    log("shared libraries: " + ", ".join(sorted(Path(c).name for c in copied)))

    # Identity of the distribution, for scanners: /etc/os-release and /etc/debian_version.
    for relative in ("etc/os-release", "etc/debian_version"):
        packages.take(relative, out)

    # CA certificates: the bundle update-ca-certificates would build from the Mozilla set.
    certs = sorted((packages.roots["ca-certificates"] / "usr/share/ca-certificates/mozilla").glob("*.crt"))
    bundle = out / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs))
    packages.used.add("ca-certificates")

    # Accounts, name service, writable /tmp (expected to be a volume), the non-root home.
    (out / "etc/passwd").write_text(PASSWD, encoding="utf-8")
    (out / "etc/group").write_text(GROUP, encoding="utf-8")
    (out / "etc/nsswitch.conf").write_text(NSSWITCH, encoding="utf-8")
    (out / "tmp").mkdir(exist_ok=True)
    (out / "home/nonroot").mkdir(parents=True, exist_ok=True)

    # Declare every Debian package whose files were copied in, distroless style.
    status_dir = out / "var/lib/dpkg/status.d"
    status_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(packages.used):
        control = packages.control[name].rstrip("\n")
        lines = [line for line in control.splitlines() if not line.startswith("Status:")]
        lines.insert(1, "Status: install ok installed")
        (status_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        doc = packages.roots[name] / f"usr/share/doc/{name}"
        if doc.is_symlink():  # e.g. libgcc-s1 -> gcc-12-base: the file is in that package
            found = packages.find(f"usr/share/doc/{Path(os.readlink(doc)).name}/copyright")
            copyright_file = found[1] if found else doc / "copyright"
        else:
            copyright_file = doc / "copyright"
        if not copyright_file.is_file():
            raise SystemExit(f"no copyright file for {name}")
        target = out / f"usr/share/doc/{name}/copyright"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(copyright_file.read_bytes())
    log("Debian packages declared: " + ", ".join(sorted(packages.used)))

    set_modes(out)
    (out / "home/nonroot").chmod(0o700)
    try:
        os.chown(out / "home/nonroot", 65532, 65532)
    except PermissionError:
        pass


# --------------------------------------------------------------------------------------------
# app: the application package and its entry point


ENTRY_POINT = f"""#!/usr/bin/python{PY} -I
# pcf-api: isolated mode (-I) ignores PYTHON* variables and the working directory.
from pcf_api.cli import entrypoint

entrypoint()
"""


def cmd_app(args: argparse.Namespace) -> None:
    site: Path = args.site
    out: Path = args.out
    target = out / SITE
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(site.iterdir()):
        if entry.name in ("bin", "__pycache__"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, symlinks=True)
        else:
            copy_file(entry, target / entry.name)
    for source in sorted(target.rglob("*.py")):
        relative = source.relative_to(target)
        cache = source.parent / "__pycache__" / f"{source.stem}.cpython-{PYTAG}.pyc"
        compile_to(source, cache, f"/{SITE}/{relative.as_posix()}", 0)
    script = out / "usr/local/bin/pcf-api"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(ENTRY_POINT, encoding="utf-8")
    script.chmod(0o755)
    set_modes(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)

    deps = commands.add_parser("deps")
    deps.add_argument("--site", type=Path, required=True, help="pip --target directory")
    deps.add_argument("--arch", choices=sorted(TRIPLETS), required=True)
    deps.add_argument("--config", type=Path, required=True)
    deps.add_argument("--out", type=Path, required=True)
    deps.add_argument("--work", type=Path, required=True)

    runtime = commands.add_parser("runtime")
    runtime.add_argument("--debs", type=Path, required=True)
    runtime.add_argument("--packages", type=Path, required=True, help="debian-packages.txt")
    runtime.add_argument("--arch", choices=sorted(TRIPLETS), required=True)
    runtime.add_argument("--config", type=Path, required=True)
    runtime.add_argument("--out", type=Path, required=True)
    runtime.add_argument("--work", type=Path, required=True)

    app = commands.add_parser("app")
    app.add_argument("--site", type=Path, required=True)
    app.add_argument("--out", type=Path, required=True)

    args = parser.parse_args(argv)
    {"deps": cmd_deps, "runtime": cmd_runtime, "app": cmd_app}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
