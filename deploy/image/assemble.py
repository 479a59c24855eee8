"""Assemble the runtime root file system of the pcf-api image (run by the Dockerfile's builder).

The builder runs on the build machine's own architecture and assembles a root file system for
the target architecture from Debian packages and wheels of that architecture, so an arm64 image
builds without emulating the whole build. Three steps, each a subcommand:

    deps     site-packages: replace the wheels that prune.toml maps to a Debian package by that
             package's build (checked against every kept distribution's requirements), drop what
             the service never imports, strip extension modules, put every pure-Python module
             (compiled, sourceless) into site-packages.zip, keep extension modules, package
             metadata and path-bound packages as files
    runtime  the interpreter, a pruned and zipped standard library, the shared libraries that
             the interpreter and every kept extension module load (found with readelf), CA
             certificates, passwd/group, /tmp, and for each Debian package whose files are
             copied in a dpkg status.d entry (control data, and <package>.md5sums listing its
             files in the image) plus its copyright file
    app      the application package (sources and hash-checked bytecode) and the `pcf-api`
             entry point

Standard library only: it runs under the builder's Debian python3.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
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

# The image runs the Python that runs this script: the builder's Debian python3.X.
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTAG = f"{sys.version_info.major}{sys.version_info.minor}"
STDLIB = Path(f"usr/lib/python{PY}")
STDLIB_ZIP = Path(f"usr/lib/python{PYTAG}.zip")
SITE = Path(f"usr/local/lib/python{PY}/dist-packages")
SITE_ZIP_NAME = "site-packages.zip"
NATIVE_FINDER = "_pcf_native"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LIB_DIRS = ("lib/{t}", "usr/lib/{t}", "lib", "usr/lib")
# On a merged-/usr Debian (13 on) these are symlinks into /usr and packages ship files only there,
# while ELF interpreters still name the old paths (/lib64/ld-linux-x86-64.so.2).
MERGED_DIRS = ("bin", "sbin", "lib", "lib64")

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


def link_duplicates(root: Path) -> int:
    """Hard-link files of identical content and mode (licence texts that many distributions
    ship, copyright files that Debian packages share): the layer tar stores each content once.
    Returns the bytes saved."""
    first: dict[tuple[int, int, str], Path] = {}
    saved = 0
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        info = path.stat()
        if info.st_size == 0:
            continue
        key = (info.st_size, info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        original = first.setdefault(key, path)
        if original != path and not path.samefile(original):
            path.unlink()
            os.link(original, path)
            saved += info.st_size
    return saved


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


def remove_distribution(site: Path, dist_info: Path) -> None:
    """A distribution's files (as its RECORD lists them), the directories that leaves empty
    (bytecode caches aside) and its metadata."""
    root = site.resolve()
    directories: set[Path] = set()
    for file in read_record(dist_info):
        target = (site / file).resolve()
        if target.is_relative_to(root) and target.exists():
            remove(target)
        directories.update(p for p in target.parents if p.is_relative_to(root) and p != root)
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        cache = directory / "__pycache__"
        if cache.is_dir() and all(c.suffix == ".pyc" for c in cache.iterdir()):
            remove(cache)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    remove(dist_info)


def dist_version(dist_info: Path) -> str:
    for line in (dist_info / "METADATA").read_text(encoding="utf-8").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"no Version in {dist_info}/METADATA")


REQUIREMENT = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^;()]*)\)?\s*(?:;.*)?$"
)
SPECIFIER = re.compile(r"^(~=|==|!=|<=|>=|<|>)\s*([0-9][0-9a-zA-Z.*+!-]*)$")


def release(version: str) -> tuple[int, ...]:
    found = re.match(r"\d+(?:\.\d+)*", version)
    if not found:
        raise SystemExit(f"cannot compare version {version!r}")
    return tuple(int(part) for part in found.group(0).split("."))


def satisfies(version: str, specifier: str) -> bool:
    """Whether a release version meets one PEP 440 clause (release segments only, which is all
    the requirements on the replaced distributions use; anything else stops the build)."""
    found = SPECIFIER.match(specifier.strip())
    if not found:
        raise SystemExit(f"cannot evaluate the version specifier {specifier!r}")
    operator, wanted = found.groups()
    have = release(version)
    if operator in ("==", "!=") and wanted.endswith(".*"):
        prefix = release(wanted[:-2])
        equal = have[: len(prefix)] == prefix
        return equal if operator == "==" else not equal
    want = release(wanted)
    width = max(len(have), len(want))
    have_padded = have + (0,) * (width - len(have))
    want_padded = want + (0,) * (width - len(want))
    if operator == "~=":
        return have_padded >= want_padded and have[: len(want) - 1] == want[:-1]
    return {
        "==": have_padded == want_padded,
        "!=": have_padded != want_padded,
        "<=": have_padded <= want_padded,
        ">=": have_padded >= want_padded,
        "<": have_padded < want_padded,
        ">": have_padded > want_padded,
    }[operator]


def check_requirements(dists: dict[str, Path], name: str, version: str) -> list[str]:
    """Every requirement that a kept distribution declares on `name` (whatever its marker or
    extra) must accept `version`; returns the requirements checked."""
    checked = []
    for owner, dist_info in sorted(dists.items()):
        for line in (dist_info / "METADATA").read_text(encoding="utf-8").splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = line.split(":", 1)[1].strip()
            project = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if not project or re.sub(r"[-_.]+", "-", project.group(0)).lower() != name:
                continue
            found = REQUIREMENT.match(requirement)
            if not found:
                raise SystemExit(f"{owner}: cannot parse the requirement {requirement!r}")
            clauses = [c for c in found.group(2).split(",") if c.strip()]
            for clause in clauses:
                if not satisfies(version, clause):
                    raise SystemExit(
                        f"{owner} requires {requirement!r}: {name} {version} does not satisfy it"
                    )
            checked.append(f"{owner}: {requirement}")
    return checked


def take_from_debian(
    site: Path, dists: dict[str, Path], from_debian: dict[str, str], debs: Path, work: Path
) -> dict[str, str]:
    """Replace each listed wheel by the Debian package's build of the same project: its Python
    tree (usr/lib/python3/dist-packages) goes where the wheel was, its dist-info included, and
    the package is declared in status.d by the runtime step like every other Debian package.
    Returns each replaced project's version now in the image (the dist-info's, else the Debian
    package's upstream version)."""
    wanted = sorted(set(from_debian.values()))
    packages = Packages(debs, work / "stage-site", wanted)
    for name in from_debian:
        dist_info = dists.pop(name, None)
        if dist_info is None:
            raise SystemExit(f"from_debian names {name!r}, which is not installed")
        remove_distribution(site, dist_info)
    debian_versions: dict[str, str] = {}
    for package in wanted:
        tree = packages.roots[package] / "usr/lib/python3/dist-packages"
        if not tree.is_dir():
            raise SystemExit(f"{package} holds no Python modules")
        entries = sorted(tree.iterdir())
        has_dist_info = any(e.name.endswith(".dist-info") for e in entries)
        for entry in entries:
            if entry.name.endswith(".egg-info"):
                if not has_dist_info:
                    raise SystemExit(f"{package}: only egg-info metadata, which deps does not keep")
                continue  # the same metadata as the package's dist-info, from the sdist build
            target = site / entry.name
            if target.exists() or target.is_symlink():
                raise SystemExit(f"{package}: {entry.name} is already in site-packages")
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, target, symlinks=True)
            else:
                copy_file(entry, target)
            if entry.name.endswith(".dist-info"):
                dists[dist_name(target)] = target
        version = re.search(r"^Version: (.+)$", packages.control[package], re.M)
        if version is None:
            raise SystemExit(f"{package}: no Version in its control data")
        debian_versions[package] = version.group(1)
        log(f"{package} {version.group(1)} replaces the wheel(s) "
            + ", ".join(sorted(n for n, p in from_debian.items() if p == package)))
    versions = {}
    for name, package in from_debian.items():
        if name in dists:
            versions[name] = dist_version(dists[name])
        else:  # [epoch:]upstream[-revision]
            versions[name] = debian_versions[package].split(":", 1)[-1].rsplit("-", 1)[0]
    return versions


def cmd_deps(args: argparse.Namespace) -> None:
    config = load_config(args.config)["site-packages"]
    site: Path = args.site
    out: Path = args.out / SITE
    out.mkdir(parents=True, exist_ok=True)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    dists = {dist_name(d): d for d in site.glob("*.dist-info")}
    from_debian: dict[str, str] = config.get("from_debian", {})
    replaced: dict[str, str] = {}
    if from_debian:
        if args.debs is None:
            raise SystemExit("[site-packages.from_debian] needs --debs")
        replaced = take_from_debian(site, dists, from_debian, args.debs, work)
    for name, reason in config["drop_distributions"].items():
        dist_info = dists.pop(name, None)
        if dist_info is None:
            raise SystemExit(f"drop_distributions names {name!r}, which is not installed")
        remove_distribution(site, dist_info)
        log(f"dropped distribution {name}: {reason}")
    # What the kept distributions require of a replaced one must hold for the Debian build.
    for name, version in replaced.items():
        for requirement in check_requirements(dists, name, version):
            log(f"{name} {version} satisfies {requirement}")
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
    """A distribution's metadata without RECORD (it lists files the pruning removed), INSTALLER
    and REQUESTED (pip's notes on how it was installed, which no scanner reads; 1 KB of tar each)
    and without the long description (the README); the headers scanners and importlib.metadata
    read stay, and so do licences and embedded SBOMs."""
    shutil.copytree(
        source, target, symlinks=True,
        ignore=shutil.ignore_patterns("RECORD", "INSTALLER", "REQUESTED"),
    )
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


def merge_usr_alias(out: Path, top: str) -> None:
    """Make /top the symlink to usr/top that a merged-/usr system has."""
    alias = out / top
    if alias.is_symlink():
        return
    if alias.exists():
        raise SystemExit(f"/{top} holds files, but a package ships /usr/{top} for a merged /usr")
    alias.symlink_to(f"usr/{top}")


class Packages:
    """Debian packages extracted side by side, each remembering its control data."""

    def __init__(self, debs: Path, stage: Path, wanted: list[str]) -> None:
        self.roots: dict[str, Path] = {}
        self.control: dict[str, str] = {}
        self.used: set[str] = set()
        self.files: dict[str, set[str]] = {}  # package -> paths in the image taken from it
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
        """Copy one path (following a chain of symlinks, each kept as a symlink) into out.

        A path no package ships but its /usr twin (merged /usr) is taken from there, and its
        top directory becomes the symlink into /usr.
        """
        found = self.find(relative)
        top = relative.split("/", 1)[0]
        if found is None and top in MERGED_DIRS:
            found = self.find(f"usr/{relative}")
            if found is not None:
                merge_usr_alias(out, top)
                relative = f"usr/{relative}"
        if found is None:
            raise SystemExit(f"no Debian package provides /{relative}")
        name, path = found
        self.used.add(name)
        self.files.setdefault(name, set()).add(relative)
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

    # The interpreter, and /usr/bin/python3 as Debian's python3-minimal links it: probes and
    # debugging commands need not know the minor version.
    packages.take(f"usr/bin/python{PY}", out)
    (out / "usr/bin/python3").symlink_to(f"python{PY}")

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
            relative = STDLIB / "lib-dynload" / module.name
            copy_file(module, out / relative)
            owner = packages.find(relative.as_posix())
            if owner:
                packages.files.setdefault(owner[0], set()).add(relative.as_posix())
    remove(dynload)
    # getpath looks for os.py or os.pyc under the prefix to find the standard library.
    compile_to(merged / "os.py", out / STDLIB / "os.pyc", f"/{STDLIB}/os.py", stdlib_config["optimize"])
    zip_tree(merged, out / STDLIB_ZIP, stdlib_config["optimize"], f"/{STDLIB}", work / "stdlib-pyc")
    (out / SITE).mkdir(parents=True, exist_ok=True)

    # Modules that libraries open at run time (no NEEDED entry names them).
    for pattern in config.get("runtime", {}).get("dlopen", []):
        packages.take(pattern.format(triplet=TRIPLETS[args.arch]), out)

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

    # The packages whose Python modules replaced wheels in site-packages (the deps step): the
    # files kept as files (extension modules, dist-info) are theirs; the modules in the zip are
    # not listed.
    for package in set(config["site-packages"].get("from_debian", {}).values()):
        packages.used.add(package)
        tree = packages.roots[package] / "usr/lib/python3/dist-packages"
        for path in tree.rglob("*"):
            relative = (SITE / path.relative_to(tree)).as_posix()
            if path.is_file() and (out / relative).is_file():
                packages.files.setdefault(package, set()).add(relative)

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
        # Which files in the image are this package's (distroless' <package>.md5sums): scanners
        # (Trivy, syft) attribute them to the package, so the Debian build of a Python project
        # is matched against Debian's security tracker, not again as a PyPI distribution. Paths
        # and digests are those of the files as the image holds them (stripped, relocated).
        owned = {*packages.files.get(name, ()), f"usr/share/doc/{name}/copyright"}
        sums = [
            f"{hashlib.md5((out / relative).read_bytes()).hexdigest()}  {relative}\n"  # noqa: S324
            for relative in sorted(owned)
            if (out / relative).is_file() and not (out / relative).is_symlink()
        ]
        (status_dir / f"{name}.md5sums").write_text("".join(sums), encoding="utf-8")
    log("Debian packages declared: " + ", ".join(sorted(packages.used)))

    set_modes(out)
    (out / "home/nonroot").chmod(0o700)
    try:
        os.chown(out / "home/nonroot", 65532, 65532)
    except PermissionError:
        pass
    # Last, over the whole dependency tree (site-packages from the deps step included).
    log(f"identical files hard-linked: {link_duplicates(out) / 1e6:.2f} MB saved")


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
    deps.add_argument("--debs", type=Path, help="the target's .deb files (for from_debian)")

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
