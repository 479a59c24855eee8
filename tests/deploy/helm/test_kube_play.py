"""The chart's ConfigMap, Secret mount and Deployment, run by `podman kube play` (the closest
thing to a cluster here) with the container image: the pod starts as uid 65532 on a read-only
root, reads its settings from the ConfigMap and its secrets from files, reports ready, and the
`helm test` script passes against it from a second container of the same image.

Runs when podman, catatonit (podman's pause process) and the image (localhost/pcf-api:dev,
built by scripts/build-image.sh or tests/container) are present; skipped otherwise.

Two podman 4.x limits are worked around on the rendered YAML, not in the chart: a pod on the
host network (to reach the host's PostgreSQL on 127.0.0.1) may not declare container ports, and
kube play writes a Secret's data base64-encoded into the mounted files, so the secret files come
from a hostPath directory with the same layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from support.helm import CHART, ROOT, render
from support.servers import free_port

pytestmark = pytest.mark.integration
IMAGE = os.environ.get("PCF_IMAGE", "localhost/pcf-api:dev")
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "kube-play-secret-" + "k" * 40
# A name of its own, so a concurrent kube play of another pcf-api is never touched.
NAME = f"pcf-api-kubeplay-{uuid.uuid4().hex[:6]}"
CONTAINER = f"{NAME}-pod-0-pcf-api"


def podman_env() -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lib" / "engine.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CONTAINER_ENGINE": "podman"},
    )
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {**os.environ, **{k: v for k, v in found.items() if k != "ENGINE"}}


def podman(*args: str, check: bool = True, timeout: float = 180) -> str:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=podman_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"pcf_kube_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def play_yaml(objects: list[dict[str, Any]], secrets_dir: Path, port: int) -> str:
    wanted = [o for o in objects if o["kind"] in ("ConfigMap", "Deployment")]
    wanted = [o for o in wanted if o["metadata"]["name"] == NAME]
    for obj in wanted:
        if obj["kind"] != "Deployment":
            continue
        spec = obj["spec"]["template"]["spec"]
        for volume in spec["volumes"]:
            if volume["name"] == "secrets":
                volume.pop("secret")
                volume["hostPath"] = {"path": str(secrets_dir), "type": "Directory"}
        for container in spec["containers"]:
            container.pop("ports")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                container[probe]["httpGet"]["port"] = port
    return yaml.safe_dump_all(wanted)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[str]:
    for tool in ("podman", "catatonit"):
        if shutil.which(tool) is None and not Path(f"/usr/libexec/podman/{tool}").exists():
            pytest.skip(f"{tool} is not installed")
    if subprocess.run(
        ["podman", "image", "exists", IMAGE], env=podman_env(), check=False
    ).returncode:
        pytest.skip(f"image {IMAGE} not built (scripts/build-image.sh)")
    directory = tmp_path_factory.mktemp("kube-play")
    directory.chmod(0o755)
    secrets = directory / "secrets"
    secrets.mkdir(mode=0o755)
    (secrets / "database-url").write_text(database)
    (secrets / "hs256-secret").write_text(SECRET)
    for path in secrets.iterdir():
        path.chmod(0o444)
    port, metrics = free_port(), free_port()
    repository, tag = IMAGE.rsplit(":", 1)
    objects = render(
        {
            "fullnameOverride": NAME,
            "image": {"repository": repository, "tag": tag},
            "config": {"server": {"port": port}, "metrics": {"port": metrics}},
            "extraConfig": {"database": {"auto_migrate": True}},
            "autoscaling": {"enabled": False},
            "replicaCount": 1,
            "secrets": {"values": {"databaseUrl": database, "hs256Secret": SECRET}},
        }
    )
    manifest = directory / "kube.yaml"
    manifest.write_text(play_yaml(objects, secrets, port))
    podman("kube", "play", "--network", "host", str(manifest))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        podman("kube", "down", str(manifest), check=False)


def test_the_pod_comes_up_ready_as_configured(pod: str) -> None:
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{pod}/health/ready", timeout=5)
            status = answer.status_code
            if status == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    logs = podman("logs", CONTAINER, check=False)
    assert status == 200, logs[-3000:]
    assert answer.json()["services"]["database"]["status"] == "up"
    user = podman("inspect", CONTAINER, "--format", "{{.Config.User}}").strip()
    assert user.startswith("65532")
    read_only = podman("inspect", CONTAINER, "--format", "{{.HostConfig.ReadonlyRootfs}}")
    assert read_only.strip() == "true"
    assert SECRET not in logs


def test_the_helm_test_script_passes_against_it(pod: str, tmp_path: Path) -> None:
    script = CHART / "files" / "helm-test.py"
    secret_file = tmp_path / "hs256-secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o444)
    tmp_path.chmod(0o755)
    output = podman(
        "run", "--rm", "--network", "host", "--read-only", "--user", "65532:65532",
        "-v", f"{script}:/etc/pcf-api-test/check.py:ro",
        "-v", f"{secret_file}:/var/run/secrets/pcf-api/hs256-secret:ro",
        "-e", f"PCF_TEST_URL={pod}",
        "-e", "PCF_AUTH__HS256_SECRET_FILE=/var/run/secrets/pcf-api/hs256-secret",
        "--entrypoint", "/usr/bin/python3.11", IMAGE, "-I", "/etc/pcf-api-test/check.py",
    )  # fmt: skip
    assert '{"notes": {"totalCount": 0}}' in output
