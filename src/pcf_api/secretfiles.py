"""Secrets that follow their files: a rotated Kubernetes Secret or a re-rendered Vault Agent file
takes effect without a restart.

Every configured secret is a ``RotatingSecret``; consumers keep the object and read ``.value``
when they use it (an attribute read: no file I/O on the request path), or ``subscribe`` to be
told of a new value. A secret given as ``x_file`` is re-read by ``SecretFiles``, which polls
every ``secrets.reload_interval_seconds``: it stats each file (following symbolic links, so the
kubelet's swap of the ``..data`` link shows as another inode) and reads it only when that
changed, then compares the content with the value in use.

Polling rather than inotify: the standard library has no inotify, a Secret volume update is a
symbolic-link swap in the parent directory that a watch on the file itself never sees, and a
stat of a few tmpfs files every few seconds costs nothing.

A rotation is logged at INFO with the setting and the file, never the value; log redaction
learns the new value before that line is written (and keeps scrubbing the old one) through the
``on_new_secret`` hook, which the composition root wires to the log scrubber: this module sits
below the logging package and does not import it. A file that disappears, becomes empty or
unreadable, or holds a value the setting refuses keeps the last good value in use, with one
WARN until the file is usable again. Write secret files atomically (a new file renamed over the
old one), as the kubelet and Vault Agent do: a reader may otherwise see a half-written value.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from pcf_api.config import (
    KNOWN_DEFAULT_SECRETS,
    MIN_SECRET_LENGTH,
    Settings,
    read_secret_file,
    redaction_forms,
)

log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

Validator = Callable[[str], str | None]
"""A new value's problem (a sentence that does not quote it), or None when it is usable."""

NewSecretHook = Callable[[Iterable[str]], None]
"""Told the strings to redact from logs (a rotated secret's new value, and the password inside a
URL) before the rotation is logged or applied, e.g. ``scrubber.add_secrets``."""

# Secrets whose consumers read the current value when they use it. The others (Redis URLs)
# are read when their client is built: a new file is noticed and logged, and applies at the
# next restart.
LIVE_KEYS = frozenset(
    {
        "database.url",
        "database.password",
        "auth.hs256_secret",
        "authz.spicedb_preshared_key",
        "metrics.password",
        "tracing.headers",
        "log.hash_key",
    }
)


class _Unusable(Exception):
    """A secret file that cannot be used now; the message says why, never what it holds."""


class RotatingSecret:
    """The current value of one secret, refreshed from its file (when it has one) by ``check``."""

    def __init__(
        self,
        key: str,
        value: str,
        path: Path | None = None,
        *,
        validate: Validator | None = None,
        live: bool = True,
        on_new_secret: NewSecretHook | None = None,
    ) -> None:
        self.key = key
        self.path = path
        self.live = live
        self.on_new_secret = on_new_secret
        self.rotations = 0
        self._value = value
        self._validate = validate
        self._subscribers: list[Callable[[RotatingSecret], None]] = []
        # Unknown at first: the first check reads the file, so a change between loading the
        # settings and starting the watcher is not missed.
        self._signature: tuple[int, ...] | None = None
        self._failing: str | None = None

    @property
    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"RotatingSecret({self.key!r}, path={self.path!r})"  # never the value

    def subscribe(self, callback: Callable[[RotatingSecret], None]) -> None:
        """Call ``callback(self)`` after each rotation (on the event loop, once per change)."""
        self._subscribers.append(callback)

    def check(self) -> bool:
        """Re-read the file if it changed; True when the value in use changed."""
        if self.path is None:
            return False
        try:
            text = self._read_if_changed(self.path)
        except _Unusable as problem:
            return self._fail(str(problem))
        if text is None:
            return False
        if self._failing is not None:
            self._failing = None
            log.info("secret file usable again", setting=self.key, path=str(self.path))
        if text == self._value:
            return False
        self._rotate(text)
        return True

    def _read_if_changed(self, path: Path) -> str | None:
        """The file's value, or None when it is the same file as last time (same inode, size
        and times: the content was compared then)."""
        try:
            stat = os.stat(path)
            signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            if signature == self._signature:
                return None
            text = read_secret_file(path)
        except OSError as exc:
            self._signature = None
            raise _Unusable(exc.strerror or type(exc).__name__) from None
        except UnicodeDecodeError:  # its message quotes the bytes: part of the secret
            self._signature = None
            raise _Unusable("not UTF-8 text") from None
        self._signature = signature  # an unusable content is not read again until it changes
        problem = "empty" if not text else self._validate(text) if self._validate else None
        if problem is not None:
            raise _Unusable(problem)
        return text

    def _fail(self, reason: str) -> bool:
        if self._failing is None:
            log.warning(
                "secret file unusable; keeping the last good value",
                setting=self.key,
                path=str(self.path),
                reason=reason,
            )
        self._failing = reason
        return False

    def _rotate(self, value: str) -> None:
        if self.on_new_secret is not None:  # before anything can log it
            self.on_new_secret(redaction_forms(self.key, value))
        self._value = value
        self.rotations += 1
        if self.live:
            log.info("secret rotated", setting=self.key, path=str(self.path))
        else:
            log.warning(
                "secret file changed; this setting is read at start only: restart to apply",
                setting=self.key,
                path=str(self.path),
            )
        for callback in self._subscribers:
            try:
                callback(self)
            except Exception:  # one consumer's failure must not stop the others or the watcher
                log.exception("applying a rotated secret failed", setting=self.key)


class SecretFiles:
    """Every configured secret by key; ``start`` watches those that came from files.

    ``on_new_secret`` is given to each secret that has no hook of its own: without one, a
    rotated value is not redacted from logs.
    """

    def __init__(
        self,
        secrets: Iterable[RotatingSecret],
        *,
        interval: float = 10.0,
        on_new_secret: NewSecretHook | None = None,
    ) -> None:
        self._secrets = {secret.key: secret for secret in secrets}
        if on_new_secret is not None:
            for secret in self._secrets.values():
                if secret.on_new_secret is None:
                    secret.on_new_secret = on_new_secret
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_new_secret: NewSecretHook | None = None
    ) -> SecretFiles:
        files = settings.secret_files()
        secrets = []
        for key, value in settings.secret_items().items():
            secrets.append(
                RotatingSecret(
                    key,
                    value,
                    files.get(key),
                    validate=_validator(key, settings),
                    live=key in LIVE_KEYS,
                )
            )
        return cls(
            secrets,
            interval=settings.secrets.reload_interval_seconds,
            on_new_secret=on_new_secret,
        )

    def get(self, key: str) -> RotatingSecret | None:
        return self._secrets.get(key)

    @property
    def watched(self) -> list[RotatingSecret]:
        return [secret for secret in self._secrets.values() if secret.path is not None]

    def check_all(self) -> list[RotatingSecret]:
        """Check every file once; the secrets that rotated."""
        rotated = []
        for secret in self.watched:
            try:
                if secret.check():
                    rotated.append(secret)
            except Exception:  # never let one file stop the watcher
                log.exception("checking a secret file failed", setting=secret.key)
        return rotated

    async def run(self) -> None:
        """Check at once, then every ``interval`` seconds, until cancelled."""
        while True:
            self.check_all()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Watch the files in a background task (nothing to do without files or interval)."""
        if self._task is None and self.interval > 0 and self.watched:
            self._task = asyncio.create_task(self.run(), name="secret-files")
            log.info(
                "watching secret files",
                settings=[secret.key for secret in self.watched],
                interval_seconds=self.interval,
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def fixed(key: str, value: str | RotatingSecret) -> RotatingSecret:
    """``value`` as a secret: itself, or a plain string that never changes."""
    return value if isinstance(value, RotatingSecret) else RotatingSecret(key, value)


def _validator(key: str, settings: Settings) -> Validator | None:
    """What a new value must satisfy: what the settings demand of it at start."""
    if key == "auth.hs256_secret" and not settings.is_development:
        return _strong_hs256_secret
    if key.endswith((".url", "_url")):
        return _url
    return None


def _url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a URL"
    return None if parts.scheme else "not a URL"


def _strong_hs256_secret(value: str) -> str | None:
    if value.strip().lower() in KNOWN_DEFAULT_SECRETS or len(value) < MIN_SECRET_LENGTH:
        return f"a default value or shorter than {MIN_SECRET_LENGTH} characters"
    return None
