"""docs/deployment.md's quick start, as far as a machine without a cluster can take it.

No kind cluster runs here, so the steps that need one are checked against what they act on: the
helm commands render and lint with exactly the flags the page gives; the token the page mints
inside the pod (`kubectl exec … pcf-api token`) is minted here with the pod's environment as the
chart renders it — its ConfigMap, its env, and the chart-generated Secret written out as the
kubelet mounts it — and must verify under the settings the pod's server loads; so must the token
minted locally from the Secret's value, as the page's second block does.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pcf_api.auth.tokens import TokenVerifier
from pcf_api.config import load_settings
from support.docs import ROOT, fenced_blocks
from support.helm import CHART, app_container, find, one, render, run, tool
from support.servers import PCF_API, clean_environ

DEPLOYMENT = ROOT / "docs" / "deployment.md"
BLOCKS = fenced_blocks(
    DEPLOYMENT, "sh", after="## Quick start on kind or minikube", before="## Production checklist"
)
QUICK_START, LOCAL_MINT = BLOCKS[0].text, BLOCKS[1].text


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = (re.sub(r"\s+# .*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def helm_set_flags(line: str) -> list[str]:
    words = shlex.split(line)
    return [f"--set={words[i + 1]}" for i, word in enumerate(words) if word == "--set"]


def test_the_image_is_loaded_with_docker_or_with_podman() -> None:
    lines = command_lines(QUICK_START)
    image = "localhost/pcf-api:dev"
    values = CHART / "values.yaml"
    assert f"repository: {image.split(':', maxsplit=1)[0]}" in values.read_text()
    assert f"kind load docker-image {image} --name pcf" in lines
    save = next(line for line in lines if line.startswith("podman save"))
    archive = shlex.split(save)[shlex.split(save).index("-o") + 1]
    assert save == f"podman save --format docker-archive -o {archive} {image}"
    assert lines[lines.index(save) + 1] == f"kind load image-archive {archive} --name pcf"


def test_the_helm_commands_lint_and_render_with_the_flags_given() -> None:
    install, upgrade = (
        line for line in command_lines(QUICK_START) if line.startswith("helm upgrade")
    )
    first, second = helm_set_flags(install), helm_set_flags(upgrade)

    run(tool("helm"), "lint", str(CHART), *first, *second)
    objects = render(_values(first + second))

    config = one(objects, "ConfigMap", "pcf-api")["data"]
    assert config["PCF_LOG__LEVEL"] == "DEBUG"
    assert "scripts/rollback.sh --namespace pcf-api" in command_lines(QUICK_START)


def _values(flags: list[str]) -> dict[str, Any]:
    """`--set a.b=c` flags as the values mapping `render` takes."""
    values: dict[str, Any] = {}
    for flag in flags:
        key, _, value = flag.removeprefix("--set=").partition("=")
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = {"true": True, "false": False}.get(value, value)
    return values


def pod_environment(objects: list[dict[str, Any]], secrets_dir: Path) -> dict[str, str]:
    """What `kubectl exec deploy/pcf-api -c pcf-api -- …` runs with: the ConfigMap and the
    container's env, the Secret's keys as files (its mount path moved to ``secrets_dir``)."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    container = app_container(objects)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    secret = one(objects, "Secret", "pcf-api")
    for name, encoded in secret["data"].items():
        (secrets_dir / name).write_bytes(base64.b64decode(encoded))
    environ = dict(one(objects, "ConfigMap", "pcf-api")["data"])
    for item in container["env"]:
        environ[item["name"]] = item["value"].replace(mount["mountPath"], str(secrets_dir))
    return environ


def pod_verifier(environ: dict[str, str]) -> TokenVerifier:
    """The verifier the pod's server builds from these settings."""
    auth = load_settings(environ=environ).settings.auth
    assert auth.hs256_secret is not None
    return TokenVerifier(
        algorithms=auth.allowed_algorithms(),
        issuer=auth.issuer,
        audience=auth.audience,
        hs256_secret=auth.hs256_secret.get_secret_value(),
    )


def minted_in_pod(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exec_line = next(
        line
        for line in command_lines(QUICK_START)
        if "kubectl" in line and " -- pcf-api token" in line
    )
    argv = shlex.split(exec_line.split(" -- ", 1)[1].rstrip(")"))
    return subprocess.run(
        [str(PCF_API), *argv[1:]],
        env=clean_environ(environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def chart_objects() -> list[dict[str, Any]]:
    objects = render()
    assert find(objects, "Secret", "pcf-api"), "the quick start relies on the chart's own Secret"
    return objects


def test_the_token_minted_in_the_pod_is_accepted_by_the_pods_settings(
    chart_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    environ = pod_environment(chart_objects, tmp_path)

    minted = minted_in_pod(environ)

    assert minted.returncode == 0, minted.stderr
    identity = asyncio.run(pod_verifier(environ).verify(minted.stdout.strip()))
    assert identity.subject == "alice"


def test_without_the_confirmation_the_pod_refuses_to_mint(
    chart_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    environ = pod_environment(chart_objects, tmp_path)
    exec_line = next(line for line in command_lines(QUICK_START) if " -- pcf-api token" in line)
    assert "--allow-production" in exec_line

    refused = subprocess.run(
        [str(PCF_API), "token", "--sub", "alice"],
        env=clean_environ(environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 2
    assert refused.stdout == ""


def test_the_token_minted_locally_from_the_secrets_value_is_accepted_too(
    chart_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    environ = pod_environment(chart_objects, tmp_path / "pod")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    get_secret, mint, cleanup = command_lines(LOCAL_MINT)
    assert get_secret.endswith("| base64 -d > hs256-secret")
    # `kubectl get secret … -o jsonpath='{.data.hs256-secret}'` prints the Secret's base64 value.
    encoded = one(chart_objects, "Secret", "pcf-api")["data"]["hs256-secret"]
    (checkout / "hs256-secret").write_bytes(base64.b64decode(encoded))

    minted = subprocess.run(
        ["bash", "-e", "-c", f'{mint}\necho "$TOKEN"'],
        cwd=checkout,
        env=clean_environ({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert minted.returncode == 0, minted.stderr
    identity = asyncio.run(pod_verifier(environ).verify(minted.stdout.strip()))
    assert identity.subject == "alice"
    assert cleanup == "rm hs256-secret"
