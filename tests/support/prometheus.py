"""A real Prometheus on 127.0.0.1 for tests: private port and storage, 1 s scrapes and rule
evaluations, queried through its HTTP API. Also the tool paths: a missing Prometheus fails the
test that needs it (it is part of the toolchain, installed by .ci/run), it never skips it."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from support.servers import free_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "pcf-api.json"
OPERATIONS = ROOT / "docs" / "operations.md"
OBSERVABILITY = ROOT / "docs" / "observability.md"
JOB = "pcf-api"
RUNBOOKS = "https://github.com/pcf-api/pcf-api/blob/main/docs/operations.md"
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is part of the test toolchain (Debian package prometheus)"
    return path


class Prometheus:
    """``prometheus`` scraping ``targets`` every second as job ``pcf-api``, with ``rule_files``."""

    def __init__(
        self,
        directory: Path,
        targets: Iterable[str],
        *,
        rule_files: Iterable[Path] = (),
        target_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    # The service's own labels win over target labels of the same name: its
                    # external_service_health{service} must not become exported_service when
                    # the scrape adds a `service` target label (as the Prometheus Operator
                    # does). The ServiceMonitor sets honorLabels: true for the same reason.
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": list(targets), "labels": dict(target_labels or {})}
                    ],
                }
            ],
        }
        # JSON is YAML: no YAML writer needed.
        self.config = self.directory / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = self.directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (or a scalar as a one-sample vector)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return list(data["result"])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"{expr!r} is a {data['resultType']}, not an instant vector")

    def series(self, match: str, within: float = 600.0) -> list[dict[str, str]]:
        now = time.time()
        return list(self.api("series", **{"match[]": match, "start": now - within, "end": now}))

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def active_alerts(self) -> dict[str, set[str]]:
        """Alert name → states (pending, firing) of its active instances."""
        states: dict[str, set[str]] = {}
        for alert in self.api("alerts")["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def eventually(self, check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
        """Poll ``check`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {timeout} s\n{self.output()}")
            time.sleep(0.25)

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it has no sample."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


def documented_metrics() -> tuple[set[str], set[str]]:
    """(names, prefixes) of the metrics docs/observability.md says the service exports: the
    metric table's first column, each histogram with its _bucket/_count/_sum series, and the
    wildcard rows (``process_*``) as prefixes."""
    names: set[str] = set()
    prefixes: set[str] = set()
    section = OBSERVABILITY.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        row = re.findall(r"`([^`]+)`", cells[0])
        kinds = [kind.strip() for kind in cells[1].split("/")]
        for position, name in enumerate(row):
            if name.endswith("*"):
                prefixes.add(name.rstrip("*"))
                continue
            kind = kinds[position] if len(kinds) == len(row) else kinds[0]
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SERIES)
    return names, prefixes


def is_documented(metric: str) -> bool:
    names, prefixes = documented_metrics()
    return metric in names or metric.startswith(tuple(prefixes))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in markdown.splitlines()
        if re.match(r"#{1,6} ", line)
    }


def finite(sample: Mapping[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))
