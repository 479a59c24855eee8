"""A private PostgreSQL cluster for tests that stop, break or lock down the database.

The shared server on 5432 must never be stopped by a test, and it trusts every local connection;
a private cluster can be stopped and started at will and can require passwords. PostgreSQL
refuses to run as root, so as root the server commands run as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from support.servers import free_port


def server_bin() -> Path:
    """The bin directory of Debian's newest installed PostgreSQL server."""
    versions = sorted(os.listdir("/usr/lib/postgresql"), key=lambda v: int(v) if v.isdigit() else 0)
    return Path("/usr/lib/postgresql") / versions[-1] / "bin"


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivateCluster:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pcf-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [
                    str(server_bin() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def require_passwords(self) -> None:
        """Every role but ``postgres`` must log in with its password (SCRAM), as in production;
        ``postgres`` stays trusted for the test's own administration. Call before ``start``."""
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def admin(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run ``statement`` as ``postgres``; its rows, if it returns any."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(statement.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def logins_since(self, role: str, moment: Any) -> int:
        """Connections of ``role`` open now that logged in after ``moment`` (a server time)."""
        (count,) = self.admin(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_start > %s",
            role,
            moment,
        )[0]
        return int(count)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(
                [
                    str(server_bin() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(server_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=True,
            capture_output=True,
        )

    def destroy(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(server_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.base, ignore_errors=True)
