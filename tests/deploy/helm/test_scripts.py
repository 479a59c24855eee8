"""The deploy kit's scripts: shellcheck-clean; deploy.sh and rollback.sh print the exact commands
with --dry-run; create-secrets.sh builds the Secret from files, refuses missing or unknown keys,
and writes no temporary file."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.helm import ROOT, TOOLS_BIN, tool

SCRIPTS = [
    "k8s-tools.sh",
    "sync-chart-files.sh",
    "render-manifests.sh",
    "create-secrets.sh",
    "deploy.sh",
    "rollback.sh",
]


def script(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{TOOLS_BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
        cwd=ROOT,
    )


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is part of the toolchain (Debian package shellcheck)"
    result = subprocess.run(
        [shellcheck, *(str(ROOT / "scripts" / name) for name in SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_deploy_dry_run_prints_the_commands() -> None:
    result = script(
        "deploy.sh", "--dry-run", "--release", "prod", "--namespace", "api",
        "--values", "deploy/helm/pcf-api/ci/production-values.yaml", "--image-tag", "1.2.3",
        "--cause", "release 1.2.3", env={"HELM": tool("helm")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    upgrade, status, annotate = result.stdout.splitlines()
    assert upgrade.split() == [
        tool("helm"), "upgrade", "--install", "prod", "deploy/helm/pcf-api", "--namespace", "api",
        "--create-namespace", "--rollback-on-failure", "--wait=watcher", "--wait-for-jobs",
        "--timeout", "10m", "--history-max", "20", "--description", "release\\", "1.2.3",
        "--values", "deploy/helm/pcf-api/ci/production-values.yaml",
        "--set-string", "image.tag=1.2.3",
    ]  # fmt: skip
    assert status == "kubectl --namespace api rollout status deployment/prod-pcf-api --timeout 10m"
    assert annotate == (
        "kubectl --namespace api annotate deployment prod-pcf-api --overwrite "
        "kubernetes.io/change-cause=release\\ 1.2.3"
    )


def test_deploy_with_helm_3_uses_atomic(tmp_path: Path) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v3.16.2+g1\n")
    fake.chmod(0o755)
    result = script("deploy.sh", "--dry-run", env={"HELM": str(fake)})
    assert result.returncode == 0, result.stderr
    assert " --atomic --wait " in result.stdout.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [],
            [
                "helm history pcf-api --namespace pcf-api --max 5",
                "helm rollback pcf-api --namespace pcf-api --wait --timeout 10m --cleanup-on-fail",
                "kubectl --namespace pcf-api rollout status deployment/pcf-api --timeout 10m",
            ],
        ),
        (
            ["--revision", "4", "--release", "prod"],
            [
                "helm history prod --namespace pcf-api --max 5",
                "helm rollback prod 4 --namespace pcf-api --wait --timeout 10m --cleanup-on-fail",
                "kubectl --namespace pcf-api rollout status deployment/prod-pcf-api --timeout 10m",
            ],
        ),
        (
            ["--kubectl", "--revision", "2"],
            [
                "kubectl --namespace pcf-api rollout undo deployment/pcf-api --to-revision 2",
                "kubectl --namespace pcf-api rollout status deployment/pcf-api --timeout 10m",
            ],
        ),
    ],
)
def test_rollback_dry_run_prints_the_commands(args: list[str], expected: list[str]) -> None:
    result = script("rollback.sh", "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_rollback_refuses_a_bad_revision() -> None:
    assert script("rollback.sh", "--dry-run", "--revision", "latest").returncode == 2


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "database-url").write_text("postgresql+asyncpg://app:pw-7f3a@db:5432/app")
    (directory / "hs256-secret").write_text("h" * 48 + "\n")
    return directory


def test_create_secrets_from_a_directory(secret_dir: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = script(
        "create-secrets.sh", "--namespace", "pcf-api", "--from-dir", str(secret_dir),
        "--require", "database-url,hs256-secret", env={"TMPDIR": str(tmp)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    assert secret["kind"] == "Secret"
    assert secret["metadata"] == {"name": "pcf-api-secrets", "namespace": "pcf-api"}
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {
        "database-url": "postgresql+asyncpg://app:pw-7f3a@db:5432/app",
        "hs256-secret": "h" * 48 + "\n",
    }
    assert list(tmp.iterdir()) == []  # no temporary copy of any value
    assert "pw-7f3a" not in result.stderr


def test_create_secrets_from_an_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "pcf-api.env"
    env_file.write_text(
        "# production\ndatabase-url=postgresql+asyncpg://a:b@db/x\nmetrics-password=m1\n"
    )
    result = script(
        "create-secrets.sh", "--from-env-file", str(env_file), "--name", "s",
        "--require", "database-url,metrics-password",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)["data"]
    assert base64.b64decode(data["metrics-password"]) == b"m1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--require", "database-url,metrics-password"],
            "required key metrics-password is missing",
        ),
        (["--from-file", "bogus-key=/etc/hostname"], "unknown key 'bogus-key'"),
        (["--from-file", "metrics-password=/nonexistent"], "cannot read /nonexistent"),
    ],
)
def test_create_secrets_refuses(secret_dir: Path, args: list[str], message: str) -> None:
    result = script("create-secrets.sh", "--from-dir", str(secret_dir), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""


def test_create_secrets_refuses_an_empty_value(tmp_path: Path) -> None:
    env_file = tmp_path / "e.env"
    env_file.write_text("database-url=\n")
    result = script("create-secrets.sh", "--from-env-file", str(env_file))
    assert result.returncode != 0
    assert "key database-url has no value" in result.stderr
