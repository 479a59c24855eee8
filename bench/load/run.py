"""Step load test of one pcf-api process — one pod — with locust (``make load-test``).

    .venv/bin/python bench/load/run.py [--rates 50,100,...] [--step-seconds 25]
        [--settle-seconds 5] [--user-rate 2] [--database postgres|sqlite] [--out DIR]
    .venv/bin/python bench/load/run.py --url http://127.0.0.1:8080 [--auth demo|hs256 ...]
        [--server-pid PID]

Without ``--url`` (or ``LOAD_TEST_URL``) it starts the server itself, as bench/graphql.py does:
a fresh PostgreSQL database on 127.0.0.1:5432 (``pcf_load_<pid>``, dropped afterwards; or a
SQLite file with ``--database sqlite``), ``pcf-api migrate``, a seed of notes for every client
the plan will run (workload.py), then ``pcf-api serve`` — one uvicorn process — with the
settings the Helm chart gives a pod: the ``config`` section of deploy/helm/pcf-api/values.yaml
as PCF_ variables (production profile, JSON logs at INFO, pool of 20, metrics on their own
port, rate limits on), the database URL and an HS256 secret from files as the chart mounts them.
Only the address (127.0.0.1, random ports), the drain time (0: the run ends sooner) and the
token audience (`pcf-api`) differ.
Clients authenticate with HS256 bearer tokens, one per locust user.

locust runs headless in a subprocess (bench/load/locustfile.py) through the steps; meanwhile a
thread samples CPU every 0.5 s from /proc: the server process, PostgreSQL's processes, the load
generator (locust and this driver) and the whole machine. Per step, over its measured window:
requests/s, p50/p90/p99, error rate, cores used. Written to DIR (default build/load-test):
results.json, steps.csv, steps.md; the table is printed too. Failed requests are reported, not
fatal: an overloaded step is a result.

Everything is bounded: each step's length is fixed, locust is stopped after the plan plus a
margin, and the server (its process group) is stopped on exit, Ctrl-C or error. Only loopback
addresses are used unless ``--url`` names another.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

# Run as a file (python bench/load/run.py) rather than with -m: the repository root goes first on
# the path in place of the script's own directory, so that bench is a package.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from bench.load import stepreport, workload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
CHART_VALUES = ROOT / "deploy" / "helm" / "pcf-api" / "values.yaml"
POSTGRES_ADMIN = os.environ.get(
    "LOAD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AUDIENCE = "pcf-api"
HZ = os.sysconf("SC_CLK_TCK")


# --- database ------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str  # postgres | sqlite
    url: str  # what pcf-api takes (async driver)
    sync_url: str  # for seeding
    notes: int = 0
    relationships: int = 0


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[Database]:
    if kind == "sqlite":
        path = workdir / "notes.db"
        yield Database("sqlite", f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}")
        return
    import psycopg  # noqa: PLC0415 - only PostgreSQL needs it

    name = f"pcf_load_{os.getpid()}"
    base = POSTGRES_ADMIN.rsplit("/", 1)[0]
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield Database(
            "postgres",
            f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}",
            f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}",
        )
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(db: Database) -> None:
    env = {
        **clean_env(),
        "PCF_ENVIRONMENT": "development",
        "PCF_LOG__LEVEL": "WARNING",
        "PCF_DATABASE__URL": db.url,
    }
    subprocess.run([str(BIN / "pcf-api"), "migrate"], env=env, check=True, timeout=120)


def seed(db: Database, clients: int, rng: random.Random) -> None:
    """Every client owns OWN_NOTES notes and may read SHARED_WITH_EACH notes of others."""
    from sqlalchemy import create_engine, insert, text  # noqa: PLC0415 - seeding only

    from pcf_api.store.models import new_note_id  # noqa: PLC0415
    from pcf_api.store.tables import note_relationships, notes  # noqa: PLC0415

    start = datetime.now(UTC) - timedelta(days=30)
    rows, relationships = [], []
    for number in range(1, clients + 1):
        owner = workload.user_name(number)
        for _ in range(workload.OWN_NOTES):
            created = start + timedelta(seconds=rng.randrange(30 * 86_400))
            rows.append(
                {
                    "id": new_note_id(),
                    "title": workload.title(rng),
                    "content": workload.content(rng),
                    "author": owner,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            relationships.append({"note_id": rows[-1]["id"], "subject": owner, "relation": "owner"})
    for number in range(1, clients + 1):
        reader = workload.user_name(number)
        others = [row for row in rows if row["author"] != reader]
        for row in rng.sample(others, min(workload.SHARED_WITH_EACH, len(others))):
            relationships.append({"note_id": row["id"], "subject": reader, "relation": "reader"})
    engine = create_engine(db.sync_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(notes), rows)
            connection.execute(insert(note_relationships), relationships)
            if db.kind == "postgres":
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    db.notes, db.relationships = len(rows), len(relationships)


# --- the server ----------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PCF_", "LOAD_TEST_"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chart_settings(values_path: Path = CHART_VALUES) -> dict[str, str]:
    """The PCF_ variables the chart's ConfigMap sets from ``config`` (empty values left out),
    as templates/_helpers.tpl renders them."""
    config = yaml.safe_load(values_path.read_text())["config"]
    env: dict[str, str] = {}

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return ",".join(text(item) for item in value)
        return str(value)

    for section, value in config.items():
        if isinstance(value, dict):
            for key, item in value.items():
                if item is None or text(item) == "":
                    continue
                if (section, key) == ("metrics", "port") and text(item) == "0":
                    continue
                env[f"PCF_{section.upper()}__{key.upper()}"] = text(item)
        elif value is not None and text(value) != "":
            env[f"PCF_{section.upper()}"] = text(value)
    return env


@dataclass
class Server:
    url: str
    pid: int
    settings: dict[str, str]
    secret_file: Path


@contextlib.contextmanager
def pcf_api(db: Database, workdir: Path, extra: dict[str, str]) -> Iterator[Server]:
    """``pcf-api serve`` as a pod runs it; its whole process group is stopped at the end."""
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "database-url").write_text(db.url)
    secret_file = secrets_dir / "hs256-secret"
    secret_file.write_text(secrets.token_urlsafe(36))
    port, metrics_port = free_port(), free_port()
    settings = {
        **chart_settings(),
        # Differences from a pod: loopback only, random ports, no drain wait at the end.
        "PCF_SERVER__HOST": "127.0.0.1",
        "PCF_SERVER__PORT": str(port),
        "PCF_METRICS__PORT": str(metrics_port),
        "PCF_SERVER__DRAIN_SECONDS": "0",
        "PCF_AUTH__AUDIENCE": AUDIENCE,
        **extra,
    }
    env = {
        **clean_env(),
        **settings,
        "PCF_DATABASE__URL_FILE": str(secrets_dir / "database-url"),
        "PCF_AUTH__HS256_SECRET_FILE": str(secret_file),
    }
    log = workdir / "pcf-api.stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(BIN / "pcf-api"), "serve"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # one access and one audit line per request
            stderr=stderr,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url, log)
        yield Server(url, process.pid, settings, secret_file)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"pcf-api exited with {process.returncode}:\n{tail}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"pcf-api at {url} not ready within {timeout:g} s")


# --- CPU -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / HZ


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / HZ  # all but idle and iowait


def postgres_seconds() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name)) or 0.0
    return total


@dataclass
class CpuSampler:
    """Cumulative CPU readings every ``interval`` s on a thread, until stopped."""

    server_pid: int | None
    with_database: bool
    interval: float = 0.5
    client_pid: int | None = None
    readings: list[stepreport.CpuReading] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def read(self) -> stepreport.CpuReading:
        return stepreport.CpuReading(
            t=time.time(),
            server=cpu_seconds(self.server_pid) if self.server_pid else None,
            database=postgres_seconds() if self.with_database else None,
            client=self._client_seconds(),
            busy=machine_busy_seconds(),
        )

    def _client_seconds(self) -> float | None:
        """locust and this process (the sampler itself): the load generator's share."""
        if not self.client_pid:
            return None
        locust = cpu_seconds(self.client_pid)
        own = cpu_seconds(os.getpid())
        return None if locust is None else locust + (own or 0.0)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.readings.append(self.read())

    @contextlib.contextmanager
    def running(self) -> Iterator[CpuSampler]:
        thread = threading.Thread(target=self.run, name="cpu-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)


# --- locust --------------------------------------------------------------------------------


def run_locust(
    url: str,
    args: argparse.Namespace,
    workdir: Path,
    *,
    sampler: CpuSampler,
    auth: list[str],
) -> dict[str, Any]:
    steps: list[stepreport.Step] = args.steps
    samples_file = workdir / "samples.json"
    command = [
        str(BIN / "locust"),
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--host",
        url,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        "5",
        "--step-rates",
        args.rates,
        "--step-seconds",
        f"{args.step_seconds:g}",
        "--settle-seconds",
        f"{args.settle_seconds:g}",
        "--user-rate",
        f"{args.user_rate:g}",
        "--samples-out",
        str(samples_file),
        *auth,
    ]
    planned = sum(step.seconds for step in steps)
    log = workdir / "locust.log"
    print(
        f"locust: {len(steps)} steps x {args.step_seconds:g} s ({planned:.0f} s) against {url}",
        file=sys.stderr,
        flush=True,
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler.client_pid = process.pid
        try:
            process.wait(timeout=planned + 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
    if process.returncode != 0 or not samples_file.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"locust failed (exit {process.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(samples_file.read_text())
    data["log"] = log.read_text(errors="replace")[-2000:]
    return data


# --- main ----------------------------------------------------------------------------------


def source_state() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("LOAD_TEST_URL", ""),
        help="target a running pcf-api instead of starting one (env LOAD_TEST_URL)",
    )
    parser.add_argument(
        "--rates", default=workload.DEFAULT_RATES, help="offered requests/s per step"
    )
    parser.add_argument("--step-seconds", type=float, default=25)
    parser.add_argument("--settle-seconds", type=float, default=5)
    parser.add_argument("--user-rate", type=float, default=2.0, help="requests/s per user")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "load-test")
    parser.add_argument(
        "--auth",
        choices=("demo", "hs256"),
        default="",
        help="with --url: identities as X-Demo-User (default) or minted HS256 tokens",
    )
    parser.add_argument("--hs256-secret-file", default="", help="with --url --auth hs256")
    parser.add_argument("--audience", default="", help="with --url --auth hs256")
    parser.add_argument("--server-pid", type=int, default=0, help="with --url: measure its CPU")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra PCF_ setting for the started server (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        args.steps = stepreport.plan(
            stepreport.parse_rates(args.rates),
            args.user_rate,
            args.step_seconds,
            args.settle_seconds,
        )
    except ValueError as error:
        parser.error(str(error))
    if args.auth == "hs256" and not args.hs256_secret_file:
        parser.error("--auth hs256 needs --hs256-secret-file")
    if args.auth and not args.url:
        parser.error("--auth is for --url; the started server always takes HS256 tokens")
    for item in args.server_env:
        if "=" not in item or not item.startswith("PCF_"):
            parser.error(f"--server-env takes PCF_KEY=VALUE, got {item!r}")
    return args


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    steps: list[stepreport.Step] = args.steps
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source_state(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": os.getloadavg(),
        },
        "user_rate": args.user_rate,
        "step_seconds": args.step_seconds,
        "settle_seconds": args.settle_seconds,
        "mix": {name: workload.CYCLE.count(name) / len(workload.CYCLE) for name in workload.CYCLE},
    }
    if args.url:
        auth = ["--auth", args.auth or "demo"]
        if args.auth == "hs256":
            auth += ["--hs256-secret-file", args.hs256_secret_file, "--audience", args.audience]
        meta["target"] = {"url": args.url, "started_here": False}
        sampler = CpuSampler(args.server_pid or None, with_database=False)
        with sampler.running():
            outcome = run_locust(args.url, args, workdir, sampler=sampler, auth=auth)
    else:
        rng = random.Random(args.seed)
        extra = dict(item.split("=", 1) for item in args.server_env)
        with database(args.database, workdir) as db:
            print(f"seeding {db.kind} ...", file=sys.stderr, flush=True)
            migrate(db)
            seed(db, max(step.users for step in steps), rng)
            with pcf_api(db, workdir, extra) as server:
                auth = [
                    "--auth",
                    "hs256",
                    "--hs256-secret-file",
                    str(server.secret_file),
                    "--audience",
                    AUDIENCE,
                ]
                meta["target"] = {
                    "url": server.url,
                    "started_here": True,
                    "database": db.kind,
                    "seeded_notes": db.notes,
                    "seeded_relationships": db.relationships,
                    "settings": server.settings,
                }
                sampler = CpuSampler(server.pid, with_database=db.kind == "postgres")
                with sampler.running():
                    outcome = run_locust(server.url, args, workdir, sampler=sampler, auth=auth)
    meta["machine"]["loadavg_after"] = os.getloadavg()
    windows = [stepreport.Window(**window) for window in outcome["windows"]]
    samples = [stepreport.Sample(*sample) for sample in outcome["samples"]]
    results = stepreport.aggregate(samples, windows, sampler.readings)
    return {
        "meta": meta,
        "steps": [result.as_dict() for result in results],
        "requests_total": len(samples),
        "failed_total": sum(1 for sample in samples if not sample.ok),
        "locust_log_tail": outcome["log"],
    }


def write_outputs(report: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    results = [stepreport.StepResult.from_dict(step) for step in report["steps"]]
    (out / "results.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    stepreport.write_csv(out / "steps.csv", results)
    cpu_request = chart_cpu_request()
    table = stepreport.markdown_table(results, cpu_request)
    meta = report["meta"]
    target = meta["target"]
    where = (
        f"pcf-api started here ({target['database']}, {target['seeded_notes']} notes seeded)"
        if target["started_here"]
        else f"{target['url']}"
    )
    text = (
        f"Load test {meta['date']}, source {meta['source']}, {where}; "
        f"{meta['user_rate']:g} requests/s per user, {meta['step_seconds']:g} s steps "
        f"(first {meta['settle_seconds']:g} s unmeasured); {meta['machine']['cpus']} CPUs. "
        "CPU in cores; % of request = server CPU / the chart's request "
        f"({cpu_request:g} cores).\n\n" + table
    )
    (out / "steps.md").write_text(text)
    return text


def chart_cpu_request(values_path: Path = CHART_VALUES) -> float:
    cpu = str(yaml.safe_load(values_path.read_text())["resources"]["requests"]["cpu"])
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _json_default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="pcf-load-") as tmp:
        report = measure(args, Path(tmp))
    text = write_outputs(report, args.out)
    print(text)
    print(f"written: {args.out}/results.json, steps.csv, steps.md", file=sys.stderr)
    if report["failed_total"]:
        print(f"{report['failed_total']} requests failed (see results.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
