"""The layer contract (pyproject's ``[tool.importlinter]``, run by ``make lint``) holds, and it
would catch a lower layer importing a higher one.

The second test runs the linter on a copy of the package with a forbidden import added, so a
contract that checks nothing (a typo in a layer name, the wrong root package) fails here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pcf_api

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(pcf_api.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _environment_without_our_paths() -> dict[str, str]:
    """The environment for a subprocess that must import the copied tree: without PYTHONPATH,
    and without coverage's variables, so the copy is not measured as part of the suite."""
    return {
        key: value
        for key, value in os.environ.items()
        if key != "PYTHONPATH" and not key.startswith("COVERAGE_")
    }


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The linter on the configuration in ``cwd``'s pyproject.toml, importing ``pcf_api`` from
    ``pythonpath`` (first on the path) when it is given."""
    env = _environment_without_our_paths()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_layer_contract_holds() -> None:
    result = lint_imports(REPO)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_fails_when_the_store_imports_graphql(tmp_path: Path) -> None:
    source = tmp_path / "src"
    copy = source / "pcf_api"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    notes = copy / "store" / "notes.py"
    notes.write_text(notes.read_text() + "\nimport pcf_api.graphql  # forbidden: a higher layer\n")
    # The copy, not the editable install, is what the linter's interpreter imports.
    env = _environment_without_our_paths()
    imported = subprocess.run(
        [sys.executable, "-c", "import pcf_api; print(pcf_api.__file__)"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(imported.stdout.strip()) == copy / "__init__.py"

    result = lint_imports(tmp_path, pythonpath=source)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "pcf_api.store is not allowed to import pcf_api.graphql" in result.stdout
    assert "pcf_api.store.notes -> pcf_api.graphql" in result.stdout
