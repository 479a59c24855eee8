"""Load a script of the repository (scripts/, bench/) as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """The file at ``path`` as module ``name`` (its stem by default), registered in
    ``sys.modules`` — dataclasses look their module up there, and scripts import their sibling
    modules by name. A module already loaded from the same file is returned as it is."""
    name = name or path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
