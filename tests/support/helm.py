"""Render the Helm chart deploy/helm/pcf-api with given values, and find the Kubernetes tools.

helm, kubectl and kubernetes-validate come from PATH or from the directory scripts/k8s-tools.sh
installs them into ($PCF_K8S_TOOLS, default /var/cache/pcf-api/k8s-tools).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "pcf-api"
CI_VALUES = CHART / "ci"
RELEASE = "pcf-api"
NAMESPACE = "pcf-api"
TOOLS_BIN = Path(os.environ.get("PCF_K8S_TOOLS", "/var/cache/pcf-api/k8s-tools")) / "bin"


def tool(name: str) -> str:
    """The pinned tool from scripts/k8s-tools.sh when installed, else the one on PATH."""
    candidate = TOOLS_BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found is not None, (
        f"{name} is part of the chart test toolchain: run scripts/k8s-tools.sh"
    )
    return found


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _values_args(
    values: Mapping[str, Any] | None, files: tuple[str, ...], made: list[Path]
) -> Iterator[str]:
    """``-f`` arguments: the chart's own value files, then ``values`` in a temporary file (its
    path appended to ``made``, for the caller to remove)."""
    for name in files:
        yield "-f"
        yield str(CI_VALUES / name)
    if values:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed by the caller
            "w", suffix=".yaml", delete=False, encoding="utf-8"
        )
        with handle:
            yaml.safe_dump(dict(values), handle)
        made.append(Path(handle.name))
        yield "-f"
        yield handle.name


def template_text(
    values: Mapping[str, Any] | None = None, *files: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`helm template` output (not checked: a render may be expected to fail)."""
    return _template(json.dumps(values or {}, sort_keys=True), files, extra)


@cache
def _template(
    values_json: str, files: tuple[str, ...], extra: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    made: list[Path] = []
    args = list(_values_args(json.loads(values_json), files, made))
    try:
        return run(
            tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            *args, *extra, check=False,
        )  # fmt: skip
    finally:
        # Only the files made here: a checkout under /tmp holds the chart's own value files.
        for path in made:
            path.unlink(missing_ok=True)


def render(values: Mapping[str, Any] | None = None, *files: str) -> list[dict[str, Any]]:
    """The rendered objects (hooks and tests included)."""
    result = template_text(values, *files)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(values: Mapping[str, Any] | None = None, *files: str) -> str:
    """The error of a render that must fail."""
    result = template_text(values, *files)
    assert result.returncode != 0, "helm template was expected to fail"
    return result.stderr


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


def app_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "pcf-api")


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}
