"""Specification of pcf_api.secretfiles: secrets that follow their files while the process runs.

A changed file (rewritten and renamed, or a Kubernetes ``..data`` link swap) is a rotation:
the value in use changes, subscribers hear of it, log redaction learns the new value and one
INFO line names the setting and the file, never the value. A file that disappears, empties or
turns unreadable keeps the last good value, with one WARN. Real files and the real logging
pipeline throughout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from pcf_api.auth.identity import AuthenticationError, TokenVerifier
from pcf_api.config import known_keys, load_settings
from pcf_api.observability.logging import REDACTED, get_logger, scrubber
from pcf_api.secretfiles import LIVE_KEYS, RotatingSecret, SecretFiles
from pcf_api.store.database import database_password
from support.logs import LogCapture, capture_logs
from support.secretdir import KubeSecretDir

OLD = "old-secret-value-0123456789-abcdefghij"
NEW = "new-secret-value-9876543210-zyxwvutsrq"


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The real pipeline, told of the old secret as `pcf-api serve` tells it of the configured
    ones; what it wrote is parsed afterwards."""
    with capture_logs(secrets=[OLD]) as capture:
        yield capture


def rewrite(path: Path, text: str) -> None:
    """Replace the file as Vault Agent does: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def watched(path: Path, key: str = "auth.hs256_secret", **kwargs: Any) -> RotatingSecret:
    """A secret told to teach log redaction its new values, as the composition root wires it."""
    kwargs.setdefault("on_new_secret", scrubber.add_secrets)
    secret = RotatingSecret(key, path.read_text().rstrip("\n"), path, **kwargs)
    secret.check()  # the baseline, as the watcher's first pass takes it
    return secret


# --- Change detection -------------------------------------------------------------------------


def test_a_rewritten_file_is_a_rotation(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD + "\n")
    secret = watched(path)
    assert secret.value == OLD

    rewrite(path, NEW + "\n")

    assert secret.check() is True
    assert secret.value == NEW  # the trailing newline is not part of it, as at start
    assert secret.rotations == 1
    (line,) = logs.records("secret rotated")
    assert line["level"] == "INFO"
    assert line["setting"] == "auth.hs256_secret"
    assert line["path"] == str(path)


def test_a_kubernetes_secret_volume_update_is_a_rotation(tmp_path: Path, logs: LogCapture) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"hs256-secret": OLD, "database-url": "x://a"})
    secret = watched(volume.path("hs256-secret"))
    first_directory = volume.current_directory()

    volume.update({"hs256-secret": NEW, "database-url": "x://a"})

    assert volume.path("hs256-secret").is_symlink()  # the path the app knows never changed
    assert not first_directory.exists()
    assert secret.check() is True
    assert secret.value == NEW
    assert [line["setting"] for line in logs.records("secret rotated")] == ["auth.hs256_secret"]


def test_an_in_place_write_is_seen_too(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "metrics-password"
    path.write_text(OLD)
    secret = watched(path, "metrics.password")

    path.write_text(NEW)  # same inode; size, mtime and ctime tell
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))

    assert secret.check() is True
    assert secret.value == NEW


def test_nothing_changed_is_no_rotation_and_no_log(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)

    assert secret.check() is False
    rewrite(path, OLD + "\n")  # a new file with the same value
    assert secret.check() is False

    assert secret.value == OLD
    assert secret.rotations == 0
    assert logs.records() == []


def test_a_change_before_the_first_check_is_not_missed(tmp_path: Path, logs: LogCapture) -> None:
    # The settings read the file at start; the watcher starts a little later.
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = RotatingSecret("auth.hs256_secret", OLD, path)
    rewrite(path, NEW)

    assert secret.check() is True
    assert secret.value == NEW


def test_a_secret_without_a_file_never_changes(tmp_path: Path) -> None:
    secret = RotatingSecret("auth.hs256_secret", OLD)
    assert secret.check() is False
    assert secret.value == OLD


# --- Files that cannot be used ----------------------------------------------------------------


def test_a_vanished_file_keeps_the_last_value_and_warns_once(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)

    path.unlink()
    for _ in range(3):
        assert secret.check() is False

    assert secret.value == OLD
    (warning,) = logs.records("secret file unusable; keeping the last good value")
    assert warning["level"] == "WARN"
    assert warning["setting"] == "auth.hs256_secret"
    assert warning["path"] == str(path)
    assert warning["reason"] == "No such file or directory"

    path.write_text(NEW)  # back, with a new value
    assert secret.check() is True
    assert secret.value == NEW
    assert len(logs.records("secret file usable again")) == 1
    assert len(logs.records("secret rotated")) == 1


def test_a_file_back_with_the_same_value_is_no_rotation(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)
    path.unlink()
    secret.check()

    path.write_text(OLD)

    assert secret.check() is False
    assert [line["message"] for line in logs.records()] == [
        "secret file unusable; keeping the last good value",
        "secret file usable again",
    ]


def test_a_vanished_kubernetes_key_keeps_the_last_value(tmp_path: Path, logs: LogCapture) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"hs256-secret": OLD, "other": "x"})
    secret = watched(volume.path("hs256-secret"))

    volume.update({"other": "y"})  # the key was removed from the Secret

    assert secret.check() is False
    assert secret.value == OLD
    assert len(logs.records("secret file unusable; keeping the last good value")) == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"\n", "empty"), (b"\xff\xfe" + NEW.encode(), "not UTF-8 text")],
)
def test_an_empty_or_unreadable_file_keeps_the_last_value(
    tmp_path: Path, logs: LogCapture, content: bytes, reason: str
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)

    temporary = tmp_path / "next"
    temporary.write_bytes(content)
    temporary.replace(path)
    assert secret.check() is False
    assert secret.check() is False

    assert secret.value == OLD
    (warning,) = logs.records("secret file unusable; keeping the last good value")
    assert warning["reason"] == reason
    assert NEW not in logs.text()


def test_a_directory_in_place_of_the_file_keeps_the_last_value(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)
    path.unlink()
    path.mkdir()

    assert secret.check() is False
    assert secret.value == OLD
    assert logs.records()[0]["reason"] == "Is a directory"


def test_a_value_the_setting_refuses_is_not_used(tmp_path: Path, logs: LogCapture) -> None:
    # Outside development a short HS256 secret is refused at start; so it is when rotated to.
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    settings = load_settings(
        environ={"PCF_DATABASE__URL": "postgresql://db/x", "PCF_AUTH__HS256_SECRET_FILE": str(path)}
    ).settings
    secret = SecretFiles.from_settings(settings).get("auth.hs256_secret")
    assert secret is not None
    secret.check()

    rewrite(path, "short-and-weak")
    assert secret.check() is False
    assert secret.value == OLD
    (warning,) = logs.records("secret file unusable; keeping the last good value")
    assert warning["reason"] == "a default value or shorter than 32 characters"
    assert "short-and-weak" not in logs.text()

    rewrite(path, NEW)
    assert secret.check() is True
    assert secret.value == NEW


@pytest.mark.parametrize("broken", ["postgresql://app:pw@db:notaport/x", "no scheme at all"])
def test_a_url_that_does_not_parse_is_not_used(
    tmp_path: Path, logs: LogCapture, broken: str
) -> None:
    path = tmp_path / "database-url"
    path.write_text("postgresql+asyncpg://app:pw@db/app")
    settings = load_settings(
        environ={"PCF_ENVIRONMENT": "development", "PCF_DATABASE__URL_FILE": str(path)}
    ).settings
    secret = SecretFiles.from_settings(settings).get("database.url")
    assert secret is not None
    secret.check()

    rewrite(path, broken)

    assert secret.check() is False
    assert secret.value == "postgresql+asyncpg://app:pw@db/app"
    (warning,) = logs.records("secret file unusable; keeping the last good value")
    assert warning["reason"] == "not a URL"


# --- What the log says, and what it never says ------------------------------------------------


def test_the_rotation_line_names_the_secret_and_never_its_value(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "database-password"
    path.write_text(OLD)
    secret = watched(path, "database.password")

    rewrite(path, NEW)
    secret.check()

    (line,) = logs.records("secret rotated")
    assert line["setting"] == "database.password"
    assert line["path"] == str(path)
    assert OLD not in logs.text()
    assert NEW not in logs.text()


def test_redaction_learns_the_new_value_and_keeps_the_old(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)
    log = get_logger("test.secrets")

    log.info(f"before: {NEW}")  # not a secret yet: written as it is
    rewrite(path, NEW)
    secret.check()
    log.info(f"after: {NEW} and {OLD}", detail={"value": NEW})
    logging.getLogger("some.library").warning("library says %s", NEW)

    lines = logs.records()
    assert lines[0]["message"] == f"before: {NEW}"
    after = [line for line in lines if line["message"].startswith("after")]
    assert after[0]["message"] == f"after: {REDACTED} and {REDACTED}"
    assert after[0]["detail"] == {"value": REDACTED}
    assert logs.records(f"library says {REDACTED}")
    assert logs.text().count(NEW) == 1  # only the line written before the rotation


def test_a_rotated_database_url_teaches_redaction_its_password(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "database-url"
    path.write_text("postgresql+asyncpg://app:old-pw-1@db:5432/app")
    secret = watched(path, "database.url")

    rewrite(path, "postgresql+asyncpg://app:n%40w-pw-2@db:5432/app")
    secret.check()
    get_logger("test").error("connect failed for n@w-pw-2 (n%40w-pw-2)")

    assert logs.records(f"connect failed for {REDACTED} ({REDACTED})")


def test_the_hook_learns_the_new_value_before_the_rotation_is_logged_or_applied(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "database-url"
    path.write_text("postgresql+asyncpg://app:old-pw-1@db:5432/app")
    secret = watched(path, "database.url")
    heard: list[tuple[list[str], int, str]] = []

    def hear(values: Iterable[str]) -> None:
        heard.append((list(values), len(logs.records("secret rotated")), secret.value))

    secret.on_new_secret = hear

    rewrite(path, "postgresql+asyncpg://app:n%40w-pw-2@db:5432/app")
    secret.check()

    # The value, and the password inside it as written and as the driver uses it; no rotation
    # line yet, and the old value still in use.
    assert heard == [
        (
            ["postgresql+asyncpg://app:n%40w-pw-2@db:5432/app", "n%40w-pw-2", "n@w-pw-2"],
            0,
            "postgresql+asyncpg://app:old-pw-1@db:5432/app",
        )
    ]
    assert len(logs.records("secret rotated")) == 1


def test_secret_files_hand_their_hook_to_every_secret_without_one(tmp_path: Path) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    settings = load_settings(
        environ={
            "PCF_ENVIRONMENT": "development",
            "PCF_AUTH__HS256_SECRET_FILE": str(path),
            "PCF_METRICS__PASSWORD": "m-secret",
        }
    ).settings
    heard: list[list[str]] = []

    def hook(values: Iterable[str]) -> None:
        heard.append(list(values))

    def own(values: Iterable[str]) -> None:
        raise AssertionError("not this secret's")

    wired = SecretFiles.from_settings(settings, on_new_secret=hook)
    registry = SecretFiles(
        [RotatingSecret("metrics.password", "m", on_new_secret=own)], on_new_secret=hook
    )

    assert {key: wired.get(key).on_new_secret for key in settings.secret_items()} == {  # type: ignore[union-attr]
        "database.url": hook,
        "auth.hs256_secret": hook,
        "metrics.password": hook,
    }
    assert registry.get("metrics.password").on_new_secret is own  # type: ignore[union-attr]
    assert SecretFiles.from_settings(settings).get("auth.hs256_secret").on_new_secret is None  # type: ignore[union-attr]
    rewrite(path, NEW)
    wired.check_all()
    assert heard == [[NEW]]


def test_redaction_learns_a_value_rotated_through_the_registry(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    settings = load_settings(
        environ={"PCF_ENVIRONMENT": "development", "PCF_AUTH__HS256_SECRET_FILE": str(path)}
    ).settings
    secrets = SecretFiles.from_settings(settings, on_new_secret=scrubber.add_secrets)
    secrets.check_all()

    rewrite(path, NEW)
    assert [secret.key for secret in secrets.check_all()] == ["auth.hs256_secret"]
    get_logger("test.secrets").warning(f"token signed with {NEW}")

    assert logs.records(f"token signed with {REDACTED}")
    assert NEW not in logs.text()


def test_a_setting_read_at_start_only_says_so(tmp_path: Path, logs: LogCapture) -> None:
    path = tmp_path / "events-redis-url"
    path.write_text("redis://:one@cache/0")
    secret = watched(path, "events.redis_url", live="events.redis_url" in LIVE_KEYS)

    rewrite(path, "redis://:two@cache/0")
    assert secret.check() is True

    (line,) = logs.records()
    assert line["level"] == "WARN"
    assert line["message"].endswith("restart to apply")
    assert line["setting"] == "events.redis_url"


# --- Subscribers ------------------------------------------------------------------------------


def test_subscribers_hear_of_each_rotation_once_even_if_one_fails(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)
    heard: list[str] = []

    def broken(_: RotatingSecret) -> None:
        raise RuntimeError("consumer bug")

    secret.subscribe(broken)
    secret.subscribe(lambda rotated: heard.append(rotated.value))

    rewrite(path, NEW)
    secret.check()
    secret.check()

    assert heard == [NEW]
    (failure,) = logs.records("applying a rotated secret failed")
    assert failure["setting"] == "auth.hs256_secret"


def test_a_rotated_hs256_secret_verifies_new_tokens_and_refuses_old_ones_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    secret = watched(path)
    verifier = TokenVerifier(algorithms=["HS256"], hs256_secret=secret)
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    old_token = jwt.encode(claims, OLD, "HS256")
    new_token = jwt.encode(claims, NEW, "HS256")

    async def scenario() -> None:
        assert (await verifier.verify(old_token)).subject == "alice"  # and now remembered
        with pytest.raises(AuthenticationError):
            await verifier.verify(new_token)

        rewrite(path, NEW)
        secret.check()

        assert (await verifier.verify(new_token)).subject == "alice"
        with pytest.raises(AuthenticationError, match="signature is invalid"):
            await verifier.verify(old_token)

    asyncio.run(scenario())


def test_a_changed_database_url_applies_its_password_and_warns_about_the_rest(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "database-url"
    path.write_text("postgresql+asyncpg://app:pw-one@db:5432/app")
    secrets = SecretFiles([watched(path, "database.url")])
    password = database_password(secrets)
    assert password() == "pw-one"

    rewrite(path, "postgresql+asyncpg://app:pw%2Ftwo@db:5432/app")
    secrets.check_all()
    assert password() == "pw/two"
    assert not logs.records(
        "database.url changed in more than its password; only the password applies until a restart"
    )

    rewrite(path, "postgresql+asyncpg://app:pw-three@elsewhere:5432/app")
    secrets.check_all()
    assert password() == "pw-three"
    (warning,) = [line for line in logs.records() if line["level"] == "WARN"]
    assert warning["message"].startswith("database.url changed in more than its password")


def test_database_password_wins_over_the_urls(tmp_path: Path) -> None:
    path = tmp_path / "database-password"
    path.write_text("from-the-file")
    settings = load_settings(
        environ={
            "PCF_ENVIRONMENT": "development",
            "PCF_DATABASE__URL": "postgresql+asyncpg://app:in-the-url@db/app",
            "PCF_DATABASE__PASSWORD_FILE": str(path),
        }
    ).settings
    secrets = SecretFiles.from_settings(settings)
    password = database_password(secrets)
    assert password() == "from-the-file"

    rewrite(path, "rotated")
    secrets.check_all()
    assert password() == "rotated"


# --- The registry and its watcher -------------------------------------------------------------


def test_every_configured_secret_is_there_and_file_ones_are_watched(tmp_path: Path) -> None:
    path = tmp_path / "metrics-password"
    path.write_text("m-secret")
    settings = load_settings(
        environ={
            "PCF_ENVIRONMENT": "development",
            "PCF_AUTH__HS256_SECRET": OLD,
            "PCF_METRICS__PASSWORD_FILE": str(path),
            "PCF_SECRETS__RELOAD_INTERVAL_SECONDS": "2.5",
        }
    ).settings

    secrets = SecretFiles.from_settings(settings)

    assert secrets.interval == 2.5
    assert [secret.key for secret in secrets.watched] == ["metrics.password"]
    metrics_password = secrets.get("metrics.password")
    assert metrics_password is not None
    assert metrics_password.path == path
    assert metrics_password.value == "m-secret"
    hs256 = secrets.get("auth.hs256_secret")
    assert hs256 is not None
    assert hs256.path is None
    assert hs256.value == OLD
    assert secrets.get("tracing.headers") is None
    assert OLD not in repr(hs256)


@pytest.mark.anyio
async def test_the_watcher_applies_a_change_within_its_interval(
    tmp_path: Path, logs: LogCapture
) -> None:
    volume = KubeSecretDir(tmp_path / "secrets", {"hs256-secret": OLD})
    secret = RotatingSecret("auth.hs256_secret", OLD, volume.path("hs256-secret"))
    secrets = SecretFiles([secret], interval=0.05)
    secrets.start()
    try:
        await asyncio.sleep(0.1)
        volume.update({"hs256-secret": NEW})
        deadline = time.monotonic() + 5
        while secret.value != NEW and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert secret.value == NEW
    finally:
        await secrets.stop()
    (started,) = logs.records("watching secret files")
    assert started["settings"] == ["auth.hs256_secret"]
    assert started["interval_seconds"] == 0.05
    assert len(logs.records("secret rotated")) == 1


@pytest.mark.anyio
async def test_the_watcher_stops_cleanly_and_survives_a_broken_check(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)

    class Exploding(RotatingSecret):
        calls = 0

        def check(self) -> bool:
            Exploding.calls += 1
            raise RuntimeError("unexpected")

    secrets = SecretFiles([Exploding("auth.hs256_secret", OLD, path)], interval=0.01)
    secrets.start()
    # Waited for rather than slept on: each failure is logged with its traceback, which takes
    # a while on a busy machine.
    deadline = time.monotonic() + 5
    while Exploding.calls < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await secrets.stop()
    calls = Exploding.calls
    assert calls >= 3  # it kept going after the failures
    assert len(logs.records("checking a secret file failed")) == calls
    await asyncio.sleep(0.05)
    assert Exploding.calls == calls  # and stopped
    await secrets.stop()  # twice is fine


@pytest.mark.anyio
async def test_no_watcher_without_files_or_with_interval_zero(tmp_path: Path) -> None:
    path = tmp_path / "hs256-secret"
    path.write_text(OLD)
    for secrets in (
        SecretFiles([RotatingSecret("auth.hs256_secret", OLD)], interval=0.01),
        SecretFiles([RotatingSecret("auth.hs256_secret", OLD, path)], interval=0),
    ):
        secrets.start()
        assert secrets._task is None
        await secrets.stop()


def test_only_the_redis_urls_wait_for_a_restart() -> None:
    # A new secret setting must be wired to its consumer, or join this list on purpose.
    secret_keys = {key for key, secret in known_keys().items() if secret}
    assert secret_keys >= LIVE_KEYS
    assert secret_keys - LIVE_KEYS == {
        "events.redis_url",
        "graphql.persisted_queries_redis_url",
        "rate_limit.storage_url",
    }
