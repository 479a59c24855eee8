"""Secrets rotated while the service runs, end to end: real `pcf-api` processes, a PostgreSQL
that checks passwords, and the secret files updated the way the kubelet updates a Secret volume
(a ``..data`` link swap).

- Database password: ALTER ROLE, then the mounted file; requests keep succeeding throughout,
  connections opened afterwards log in with the new password (the old one is refused by then),
  and once every connection is cut the service, its events listener included, comes back on the
  new password alone. `pcf-api migrate` waiting for the database picks up a new password too.
- HS256 secret and metrics password: the new one is accepted and the old one refused, without a
  restart; the log names each rotated setting and file, and neither value reaches any line.
- SpiceDB pre-shared key and OTLP headers: the next request or export carries the new value.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from pcf_api.auth.policy import BackendUnavailable
from pcf_api.auth.spicedb import SpiceDBBackend
from pcf_api.config import TracingSettings
from pcf_api.observability.tracing import Tracing
from pcf_api.secretfiles import RotatingSecret
from support.otlp_receiver import OtlpReceiver
from support.pgcluster import PrivateCluster
from support.secretdir import KubeSecretDir
from support.servers import DEV_JSON, PCF_API, ServerProcess, clean_environ
from support.spicedb_server import SpiceDBServer

pytestmark = pytest.mark.integration

CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"
LIST = "{ notes(limit: 5) { totalCount } }"
OLD_PASSWORD = "old-db-pw-" + uuid.uuid4().hex
NEW_PASSWORD = "new-db-pw-" + uuid.uuid4().hex
ROTATED = "secret rotated"


@dataclass
class Role:
    cluster: PrivateCluster
    name: str
    database: str

    def url(self) -> str:  # no password: it comes from the file
        return f"postgresql+asyncpg://{self.name}@127.0.0.1:{self.cluster.port}/{self.database}"

    def can_log_in(self, password: str) -> bool:
        dsn = f"postgresql://{self.name}@127.0.0.1:{self.cluster.port}/{self.database}"
        try:
            psycopg.connect(dsn, password=password, connect_timeout=5).close()
        except psycopg.OperationalError:
            return False
        return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    cluster.require_passwords()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def role(cluster: PrivateCluster) -> Iterator[Role]:
    name = f"app_{uuid.uuid4().hex[:8]}"
    role = Role(cluster, name, name)
    role.cluster.admin(f"CREATE ROLE {name} LOGIN PASSWORD '{OLD_PASSWORD}'")
    role.cluster.admin(f"CREATE DATABASE {name} OWNER {name}")
    try:
        yield role
    finally:
        role.cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        role.cluster.admin(f"DROP ROLE IF EXISTS {name}")


@dataclass
class Traffic:
    """Requests one after another from a thread until stopped: creates and lists, alternately."""

    url: str
    outcomes: list[tuple[float, str]] = field(default_factory=list)  # (time, "ok" or why not)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def ok(self) -> int:
        return sum(1 for _, outcome in self.outcomes if outcome == "ok")

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        return [outcome for at, outcome in self.outcomes if outcome != "ok" and since <= at < until]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                self.outcomes.append((time.monotonic(), request(client, count)))


def request(client: httpx.Client, count: int) -> str:
    if count % 2:
        body = {
            "query": CREATE,
            "variables": {"i": {"title": f"n{count}", "content": "c", "author": "alice"}},
        }
    else:
        body = {"query": LIST}
    try:
        response = client.post("/graphql", json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code != 200 or response.json().get("errors"):
        return f"{response.status_code} {response.text[:300]}"
    return "ok"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rotations(server: ServerProcess) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if line["message"] == ROTATED]


def serve_env(**extra: str) -> dict[str, str]:
    return {
        **DEV_JSON,
        "PCF_SECRETS__RELOAD_INTERVAL_SECONDS": "0.2",
        "PCF_RATE_LIMIT__ENABLED": "false",
        **extra,
    }


# --- Database password --------------------------------------------------------------------------


def test_a_rotated_database_password_is_used_without_a_restart_or_a_failed_request(
    server_factory: Any, tmp_path: Path, role: Role
) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"database-password": OLD_PASSWORD})
    server = server_factory(
        serve_env(
            PCF_DATABASE__URL=role.url(),
            PCF_DATABASE__PASSWORD_FILE=str(volume.path("database-password")),
        )
    )
    server.wait_until_ready(timeout=60)
    traffic = Traffic(server.url)
    traffic.start()
    try:
        wait_for(lambda: traffic.ok() >= 20, "requests before the rotation")

        # 1. The database gets the new password; the old one no longer logs in.
        role.cluster.admin(f"ALTER ROLE {role.name} PASSWORD '{NEW_PASSWORD}'")
        (database_now,) = role.cluster.admin("SELECT now()")[0]
        assert not role.can_log_in(OLD_PASSWORD)
        assert role.can_log_in(NEW_PASSWORD)

        # 2. The mounted Secret is updated; the server notices within its interval.
        volume.update({"database-password": NEW_PASSWORD})
        wait_for(lambda: rotations(server), "the rotation to be logged")
        (line,) = rotations(server)
        assert line["level"] == "INFO"
        assert line["setting"] == "database.password"
        assert line["path"] == str(volume.path("database-password"))

        # 3. Bursts of more requests at once than the pool has connections open, until one makes
        #    it open another (how many overlap is up to the scheduler): new connections can
        #    only log in with the new password.
        def opened_since_rotation() -> int:
            return role.cluster.logins_since(role.name, database_now)

        with (
            ThreadPoolExecutor(max_workers=24) as pool,
            httpx.Client(
                base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=24)
            ) as client,
        ):
            for _ in range(10):
                burst = list(pool.map(lambda n: request(client, n), range(2, 98, 2)))
                assert burst == ["ok"] * len(burst)
                if opened_since_rotation() >= 1:
                    break
        assert opened_since_rotation() >= 1
        wait_for(lambda: traffic.ok() >= 60, "requests after the rotation")
        assert traffic.failures() == [], traffic.failures()[:3]

        # 4. Every connection cut (the pool's, the events listener's and publisher's): the
        #    service comes back on the new password alone. The cut itself may fail a request
        #    or two (a dead pooled connection fails its next statement) — not the rotation.
        role.cluster.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role.name
        )
        cut_at = time.monotonic()
        wait_for(
            lambda: any(
                line["message"].startswith("events listener reconnected")
                for line in server.log_lines()
            ),
            "the events listener to reconnect",
        )

        def recovered() -> bool:
            after = [outcome for at, outcome in traffic.outcomes if at > cut_at]
            return after[-20:] == ["ok"] * 20

        wait_for(recovered, "20 requests in a row to succeed after the cut")
    finally:
        traffic.stop()

    server.terminate()
    assert server.wait() == 0
    output = server.output()
    assert OLD_PASSWORD not in output
    assert NEW_PASSWORD not in output
    assert "cannot reconnect" not in output  # the listener never tried the old password


def test_pcf_api_migrate_waiting_for_the_database_picks_up_a_new_password(
    tmp_path: Path, role: Role
) -> None:
    role.cluster.admin(f"ALTER ROLE {role.name} PASSWORD '{NEW_PASSWORD}'")
    volume = KubeSecretDir(tmp_path / "secrets", {"database-password": OLD_PASSWORD})
    environ = clean_environ(
        {
            "PCF_ENVIRONMENT": "development",
            "PCF_LOG__FORMAT": "json",
            "PCF_DATABASE__URL": role.url(),
            "PCF_DATABASE__PASSWORD_FILE": str(volume.path("database-password")),
            "PCF_DATABASE__RETRY_INITIAL_SECONDS": "0.2",
            "PCF_DATABASE__RETRY_MAX_SECONDS": "0.5",
            "PCF_SECRETS__RELOAD_INTERVAL_SECONDS": "0.2",
        }
    )
    output = tmp_path / "migrate.out"
    with output.open("wb") as stdout:
        process = subprocess.Popen(
            [str(PCF_API), "migrate"], env=environ, stdout=stdout, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: b"database not reachable" in output.read_bytes(), "a refused login")
            assert process.poll() is None  # still waiting, as a Job would
            volume.update({"database-password": NEW_PASSWORD})
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    text = output.read_text()
    assert '"setting":"database.password"' in text
    assert "database schema migrated" in text
    assert OLD_PASSWORD not in text
    assert NEW_PASSWORD not in text


# --- HS256 secret and metrics password ----------------------------------------------------------


def token(secret: str) -> str:
    return jwt.encode({"sub": "bob", "exp": int(time.time()) + 600}, secret, "HS256")


def basic(password: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()
    }


def test_hs256_secret_and_metrics_password_rotate_without_a_restart(
    server_factory: Any, tmp_path: Path
) -> None:
    old_secret, new_secret = "hs-old-" + uuid.uuid4().hex, "hs-new-" + uuid.uuid4().hex
    old_metrics, new_metrics = "m-old-" + uuid.uuid4().hex, "m-new-" + uuid.uuid4().hex
    volume = KubeSecretDir(
        tmp_path / "secrets", {"hs256-secret": old_secret, "metrics-password": old_metrics}
    )
    server = server_factory(
        serve_env(
            PCF_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path}/notes.db",
            PCF_AUTH__HS256_SECRET_FILE=str(volume.path("hs256-secret")),
            PCF_METRICS__PASSWORD_FILE=str(volume.path("metrics-password")),
        )
    )
    server.wait_until_ready()
    old_token, new_token = token(old_secret), token(new_secret)

    def graphql_status(bearer: str) -> int:
        answer = httpx.post(
            f"{server.url}/graphql",
            json={"query": LIST},
            headers={"Authorization": f"Bearer {bearer}"},
        )
        return answer.status_code

    def metrics_status(password: str) -> int:
        return httpx.get(f"{server.url}/metrics", headers=basic(password)).status_code

    assert graphql_status(old_token) == 200
    assert graphql_status(new_token) == 401
    assert metrics_status(old_metrics) == 200
    assert metrics_status(new_metrics) == 401

    volume.update({"hs256-secret": new_secret, "metrics-password": new_metrics})
    wait_for(lambda: len(rotations(server)) == 2, "both rotations to be logged")

    assert graphql_status(new_token) == 200
    assert graphql_status(old_token) == 401  # though it verified a moment ago
    assert metrics_status(new_metrics) == 200
    assert metrics_status(old_metrics) == 401
    for value in (new_secret, new_metrics):  # logged by the access log, redacted
        httpx.get(f"{server.url}/{value}")

    server.terminate()
    assert server.wait() == 0
    lines = rotations(server)
    assert {(line["setting"], line["path"]) for line in lines} == {
        ("auth.hs256_secret", str(volume.path("hs256-secret"))),
        ("metrics.password", str(volume.path("metrics-password"))),
    }
    assert all(line["level"] == "INFO" for line in lines)
    output = server.output()
    for value in (old_secret, new_secret, old_metrics, new_metrics):
        assert value not in output
    assert output.count("[REDACTED]") >= 2


# --- SpiceDB pre-shared key and OTLP headers (in process, against real local servers) -----------


def test_a_rotated_spicedb_key_is_sent_from_the_next_request_on(tmp_path: Path) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"spicedb-preshared-key": "key-one-0123456789"})
    key = RotatingSecret(
        "authz.spicedb_preshared_key", "key-one-0123456789", volume.path("spicedb-preshared-key")
    )

    async def scenario(server: SpiceDBServer) -> None:
        backend = SpiceDBBackend(server.url, key, timeout=2.0, failure_threshold=100)
        try:
            await backend.ping()
            server.preshared_key = "key-two-9876543210"  # SpiceDB now wants the new key
            with pytest.raises(BackendUnavailable):
                await backend.ping()
            volume.update({"spicedb-preshared-key": "key-two-9876543210"})
            assert key.check() is True
            await backend.ping()
        finally:
            await backend.aclose()

    with SpiceDBServer(preshared_key="key-one-0123456789") as server:
        asyncio.run(scenario(server))


def test_rotated_otlp_headers_go_with_the_next_export(tmp_path: Path) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"tracing-headers": "x-api-key=first"})
    headers = RotatingSecret("tracing.headers", "x-api-key=first", volume.path("tracing-headers"))
    with OtlpReceiver() as receiver:
        tracing = Tracing(
            TracingSettings(enabled=True, endpoint=receiver.endpoint),
            version="test",
            environment="test",
            headers=headers,
        )
        try:
            tracing.tracer.start_span("one").end()
            assert tracing.provider.force_flush()
            volume.update({"tracing-headers": "x-api-key=second,x-tenant=t1"})
            assert headers.check() is True
            tracing.tracer.start_span("two").end()
            assert tracing.provider.force_flush()
        finally:
            tracing.shutdown()
        sent = [
            (request.get("x-api-key"), request.get("x-tenant")) for request in receiver.requests
        ]
    assert sent == [("first", None), ("second", "t1")]
