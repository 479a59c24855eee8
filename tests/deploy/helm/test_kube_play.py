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

Rotation, end to end: a second pod runs against a private PostgreSQL cluster that checks
passwords (the host's trusts every local connection, which would prove nothing). Its secret
directory is laid out and updated the way the kubelet updates a Secret volume (``..data`` link
swap, tests/support/secretdir.py); the password is changed with ALTER ROLE, the `database-url`
file updated, and the pod keeps answering every request without a restart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import yaml

from support.helm import CHART, ROOT, render
from support.pgcluster import PrivateCluster
from support.secretdir import KubeSecretDir
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


def play_yaml(objects: list[dict[str, Any]], secrets_dir: Path, port: int, name: str = NAME) -> str:
    wanted = [o for o in objects if o["kind"] in ("ConfigMap", "Deployment")]
    wanted = [o for o in wanted if o["metadata"]["name"] == name]
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


def require_podman_and_image() -> None:
    for tool in ("podman", "catatonit"):
        if shutil.which(tool) is None and not Path(f"/usr/libexec/podman/{tool}").exists():
            pytest.skip(f"{tool} is not installed")
    if subprocess.run(
        ["podman", "image", "exists", IMAGE], env=podman_env(), check=False
    ).returncode:
        pytest.skip(f"image {IMAGE} not built (scripts/build-image.sh)")


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[str]:
    require_podman_and_image()
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
        "--entrypoint", "/usr/bin/python3", IMAGE, "-I", "/etc/pcf-api-test/check.py",
    )  # fmt: skip
    assert '{"notes": {"totalCount": 0}}' in output


# --------------------------------------------------------------------------------------------
# rotation of the database password while the pod serves


ROTATING = f"pcf-api-rotate-{uuid.uuid4().hex[:6]}"
ROTATING_CONTAINER = f"{ROTATING}-pod-0-pcf-api"
OLD_PASSWORD = "kube-old-" + uuid.uuid4().hex
NEW_PASSWORD = "kube-new-" + uuid.uuid4().hex
LIST = "{ notes(limit: 5) { totalCount } }"
CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"


@dataclass
class RotatingPod:
    url: str
    cluster: PrivateCluster
    role: str
    secrets: KubeSecretDir

    def database_url(self, password: str) -> str:
        return (
            f"postgresql+asyncpg://{self.role}:{password}@127.0.0.1:{self.cluster.port}/{self.role}"
        )


@pytest.fixture(scope="module")
def rotating_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RotatingPod]:
    require_podman_and_image()
    cluster = PrivateCluster()
    cluster.require_passwords()
    cluster.start()
    manifest: Path | None = None
    try:
        role = f"app_{uuid.uuid4().hex[:8]}"
        cluster.admin(f"CREATE ROLE {role} LOGIN PASSWORD '{OLD_PASSWORD}'")
        cluster.admin(f"CREATE DATABASE {role} OWNER {role}")
        directory = tmp_path_factory.mktemp("kube-play-rotate")
        directory.chmod(0o755)
        rotating = RotatingPod("", cluster, role, KubeSecretDir(directory / "secrets", {}))
        rotating.secrets.update(
            {"database-url": rotating.database_url(OLD_PASSWORD), "hs256-secret": SECRET}
        )
        for path in [rotating.secrets.root, *rotating.secrets.root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o444)
        port, metrics = free_port(), free_port()
        repository, tag = IMAGE.rsplit(":", 1)
        objects = render(
            {
                "fullnameOverride": ROTATING,
                "image": {"repository": repository, "tag": tag},
                "config": {"server": {"port": port}, "metrics": {"port": metrics}},
                "extraConfig": {
                    "database": {"auto_migrate": True},
                    "secrets": {"reload_interval_seconds": 1},
                    "rate_limit": {"enabled": False},
                },
                "autoscaling": {"enabled": False},
                "replicaCount": 1,
                "secrets": {
                    "values": {"databaseUrl": rotating.database_url("x"), "hs256Secret": SECRET}
                },
            }
        )
        manifest = directory / "kube.yaml"
        manifest.write_text(play_yaml(objects, rotating.secrets.root, port, ROTATING))
        podman("kube", "play", "--network", "host", str(manifest))
        rotating.url = f"http://127.0.0.1:{port}"
        yield rotating
    finally:
        if manifest is not None:
            podman("kube", "down", str(manifest), check=False)
        cluster.destroy()


def graphql_outcome(client: httpx.Client, count: int) -> str:
    """One request (creates and lists alternately): "ok", or what went wrong."""
    if count % 2:
        note = {"title": f"n{count}", "content": "c", "author": "alice"}
        body: dict[str, Any] = {"query": CREATE, "variables": {"i": note}}
    else:
        body = {"query": LIST}
    try:
        answer = client.post("/graphql", json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    ok = answer.status_code == 200 and not answer.json().get("errors")
    return "ok" if ok else f"{answer.status_code} {answer.text[:200]}"


def rotating_logs() -> str:
    return podman("logs", ROTATING_CONTAINER, check=False)


def wait_for(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}\n{rotating_logs()[-3000:]}"
        time.sleep(0.2)


def answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_a_rotated_database_password_is_picked_up_without_a_restart_or_a_failed_request(
    rotating_pod: RotatingPod,
) -> None:
    pod = rotating_pod
    bearer = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    client = httpx.Client(
        base_url=pod.url, timeout=10, headers={"Authorization": f"Bearer {bearer}"}
    )
    outcomes: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            outcomes.append(graphql_outcome(client, count))

    wait_for(lambda: answers_ready(pod.url), "the pod to be ready")
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        wait_for(lambda: outcomes.count("ok") >= 20, "requests before the rotation")
        pod.cluster.admin(f"ALTER ROLE {pod.role} PASSWORD '{NEW_PASSWORD}'")
        (changed_at,) = pod.cluster.admin("SELECT now()")[0]
        pod.secrets.update({"database-url": pod.database_url(NEW_PASSWORD), "hs256-secret": SECRET})
        for path in pod.secrets.current_directory().iterdir():
            path.chmod(0o444)
        wait_for(lambda: '"setting":"database.url"' in rotating_logs(), "the rotation to be logged")
        # Bursts of more requests at once than the pool has connections open, until one makes
        # it open another (how many overlap is up to the scheduler): new connections can only
        # log in with the new password.
        for _ in range(10):
            with ThreadPoolExecutor(max_workers=24) as workers:
                burst = list(workers.map(lambda n: graphql_outcome(client, n), range(2, 98, 2)))
            assert burst == ["ok"] * len(burst)
            if pod.cluster.logins_since(pod.role, changed_at) >= 1:
                break
        wait_for(lambda: outcomes.count("ok") >= 80, "requests after the rotation")
    finally:
        stop.set()
        thread.join(timeout=30)
        client.close()
    assert [outcome for outcome in outcomes if outcome != "ok"] == []
    assert pod.cluster.logins_since(pod.role, changed_at) >= 1
    restarts = podman("inspect", ROTATING_CONTAINER, "--format", "{{.RestartCount}}").strip()
    assert restarts == "0"
    text = rotating_logs()
    assert '"message":"secret rotated"' in text
    assert OLD_PASSWORD not in text
    assert NEW_PASSWORD not in text
