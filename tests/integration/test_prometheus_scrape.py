"""The dashboard and the alert rules against a real Prometheus scraping a real pcf-api.

- A healthy service under traffic (queries, a mutation, client errors, rate-limited searches, a
  subscription): every PromQL expression of the dashboard and of the rules file is evaluated
  through Prometheus' HTTP API, every metric and label it selects exists, and no alert is active.
- A service in trouble (its database stopped, then flapping; slow requests; restarts; the
  process gone): every alert of the rules file becomes active (pending or firing — the `for`
  durations are the promtool unit tests' business) on the real signals.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support import grafana
from support.databases import postgres_database
from support.pgcluster import PrivateCluster
from support.prometheus import DASHBOARD, JOB, RULES, Prometheus, finite
from support.promql import Selector, selectors
from support.redis import PrivateRedis, private_redis
from support.servers import DEV_JSON, ServerFactory, free_port
from support.wsclient import SubscriptionClient

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.host_only]  # prometheus

TARGET_LABELS = {"namespace": "pcf-test", "service": "pcf-api", "environment": "development"}
CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"
LIST = "query Listing { notes(limit: 5) { edges { node { id title } } totalCount } }"
READ = "query Reading($id: ID!) { note(id: $id) { id title } }"
SEARCH = 'query Searching { searchNotes(query: "t") { id } }'
SERVER_SIDE = "INTERNAL_ERROR|DATABASE_ERROR|SERVICE_UNAVAILABLE|TIMEOUT"

# Selectors that rightly match nothing while the service is healthy: server-side failures and
# 5xx answers. For them the metric and each label must exist; the trouble test below makes the
# alerts that read them fire.
QUIET_WHEN_HEALTHY = {
    ("graphql_request_total", "status", "=~", SERVER_SIDE),
    ("http_request_total", "status", "=~", "5.."),
}

DATABASE_ALERTS = {
    "PcfApiDatabaseUnavailable",
    "PcfApiAuthorizationDegraded",
    "PcfApiAuthorizationFailingClosed",
    "PcfApiWriteQueueNearLimit",
    "PcfApiNotReady",
    "PcfApiHighErrorRatio",
    "PcfApiAvailabilityBudgetFastBurn",
    "PcfApiAvailabilityBudgetSlowBurn",
}
REDIS_ALERTS = {"PcfApiRedisUnavailable"}
FLAPPING_ALERTS = {"PcfApiReadinessFlapping"}
LATENCY_ALERTS = {
    "PcfApiLatencyBudgetFastBurn",
    "PcfApiLatencyBudgetSlowBurn",
    "PcfApiHighLatencyP99",
}
PROCESS_ALERTS = {"PcfApiRestarting", "PcfApiTargetDown", "PcfApiAllReplicasDown"}


def finite_samples(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    return [sample for sample in prometheus.query(expr) if finite(sample)]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    """``prometheus_for(port)``: a Prometheus scraping the pcf-api on that port, with the rules."""
    started: list[Prometheus] = []

    def start(port: int) -> Prometheus:
        prometheus = Prometheus(
            tmp_path / f"prometheus-{len(started)}",
            [f"127.0.0.1:{port}"],
            rule_files=[RULES],
            target_labels=TARGET_LABELS,
        )
        started.append(prometheus)
        prometheus.start()
        prometheus.eventually(
            lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1, "a first successful scrape"
        )
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


@pytest.fixture
def rate_limit_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    with private_redis(directory) as server:
        yield server


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


def _post(client: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    return response.json()


def _create(client: httpx.Client, title: str) -> Any:
    return _post(client, CREATE, {"i": {"title": title, "content": "c", "author": "alice"}})


def _create_at(url: str, title: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        created = _create(client, title)
    assert "errors" not in created, created


def _drive_healthy_traffic(url: str, seconds: float) -> None:
    """Creates, lists, reads (authorization decisions, cached and not), an invalid document
    and searches past their budget, spread over ``seconds`` so several scrapes see them."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client:
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            created = _create(client, f"note {sequence}")
            assert "errors" not in created, created
            note_id = created["data"]["createNote"]["id"]
            assert "errors" not in _post(client, LIST)
            for _ in range(2):
                assert "errors" not in _post(client, READ, {"id": note_id})
            assert "errors" in _post(client, "{ nope }")
            _post(client, SEARCH)
            time.sleep(0.2)


def _resolve_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable's values, as Grafana gets them (label_values over the series API),
    in order, substituted into the next ones; every variable must find values."""
    values: dict[str, str] = {}
    for variable in grafana.variables(dashboard):
        if variable["type"] == "datasource":
            assert variable["query"] == "prometheus"
            continue
        assert variable["type"] == "query", variable
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        selector, label = grafana.label_values(grafana.variable_query(variable))
        assert selector is not None, f"${variable['name']}: label_values without a selector"
        series = prometheus.series(grafana.substitute(selector, values))
        found = sorted({entry[label] for entry in series if label in entry})
        assert found, f"${variable['name']}: {selector} has no {label!r} values"
        values[variable["name"]] = grafana.regex_of(found)
    return values


class Series:
    """The series API, each match asked once."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.prometheus = prometheus
        self.known: dict[str, list[dict[str, str]]] = {}

    def __call__(self, match: str) -> list[dict[str, str]]:
        if match not in self.known:
            self.known[match] = self.prometheus.series(match)
        return self.known[match]


def _selector_problems(series_of: Series, selector: Selector, where: str) -> list[str]:
    """What is wrong with ``selector`` on this Prometheus: a metric without series, a label no
    series carries, an exact value no series has, or no series matching at all."""
    if not selector.metric:
        return [f"{where}: selector without a metric name: {selector}"]
    series = series_of(selector.metric)
    if not series:
        return [f"{where}: no series of {selector.metric}"]
    problems = []
    for matcher in selector.matchers:
        carried = {entry[matcher.label] for entry in series if matcher.label in entry}
        if matcher.op == "=" and matcher.value not in carried:
            problems.append(f"{where}: no {selector.metric} has {matcher.label}={matcher.value!r}")
        elif not carried and not matcher.accepts_absence:
            problems.append(f"{where}: no {selector.metric} carries the label {matcher.label!r}")
    quiet = any(
        (selector.metric, m.label, m.op, m.value) in QUIET_WHEN_HEALTHY for m in selector.matchers
    )
    if not problems and not quiet and not series_of(str(selector)):
        problems.append(f"{where}: {selector} matches no series")
    return problems


async def test_every_dashboard_and_rule_expression_returns_data_from_a_live_service(
    server_factory: ServerFactory,
    prometheus_for: Callable[[int], Prometheus],
    tmp_path: Path,
    rate_limit_redis: PrivateRedis,
) -> None:
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/notes.db",
            "PCF_HEALTH__CHECK_INTERVAL_SECONDS": "1",
            "PCF_RATE_LIMIT__SEARCH": "3/minute",
            "PCF_RATE_LIMIT__STORAGE_URL": rate_limit_redis.url,
        }
    )
    server.wait_until_ready()
    prometheus = prometheus_for(server.port)

    async with SubscriptionClient(f"ws://127.0.0.1:{server.port}/graphql") as subscriber:
        await subscriber.subscribe("1", "subscription { noteCreated { id title } }")
        await asyncio.to_thread(
            prometheus.eventually,
            lambda: prometheus.value(f'sum(graphql_active_subscriptions{{job="{JOB}"}})') == 1,
            "the open subscription in a scrape",
        )
        await asyncio.to_thread(_create_at, server.url, "delivered")
        _, data = await subscriber.next_data()
        assert data["noteCreated"]["title"] == "delivered"
        await subscriber.stop("1")
    await asyncio.to_thread(_drive_healthy_traffic, server.url, 4.0)

    recorded = [rule for rule in rules() if "record" in rule]
    alerting = [rule for rule in rules() if "alert" in rule]
    # Every recording rule has been evaluated over the traffic (each is one group's rule).
    for rule in recorded:
        prometheus.eventually(
            functools.partial(finite_samples, prometheus, rule["record"]),
            f"recorded {rule['record']}",
        )

    problems: list[str] = []
    series_of = Series(prometheus)
    dashboard = grafana.load(DASHBOARD)
    values = _resolve_variables(prometheus, dashboard)
    assert values["job"] == JOB, values
    assert values["namespace"] == "pcf-test", values
    targets = grafana.targets(dashboard)
    assert len(targets) >= 20
    for target in targets:
        expr = grafana.substitute(target.expr, values)
        result = prometheus.query(expr)
        if not result:
            problems.append(f"panel {target}: no data from {expr}")
        elif not any(finite(sample) for sample in result):
            problems.append(f"panel {target}: only NaN/Inf from {expr}: {result}")
        for selector in selectors(expr):
            problems += _selector_problems(series_of, selector, f"panel {target}")

    for rule in recorded:
        result = prometheus.query(rule["expr"])
        if not [sample for sample in result if finite(sample)]:
            problems.append(f"recording {rule['record']}: no finite data: {result}")
    for rule in alerting:
        prometheus.query(rule["expr"])  # valid PromQL, evaluated; empty while all is well
    for rule in rules():
        name = rule.get("record") or rule["alert"]
        for selector in selectors(rule["expr"]):
            problems += _selector_problems(series_of, selector, f"rule {name}")

    evaluated = {
        rule["name"]: rule for group in prometheus.rule_groups() for rule in group["rules"]
    }
    assert set(evaluated) == {rule.get("record") or rule["alert"] for rule in rules()}
    for name, rule in evaluated.items():
        if rule["health"] != "ok" or rule.get("lastError"):
            problems.append(f"rule {name}: {rule['health']} {rule.get('lastError')}")

    assert problems == [], "\n".join(problems)
    assert prometheus.active_alerts() == {}, "alerts on a healthy service"


def _drive_traffic_while_healthy(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for number in range(3):
            assert "errors" not in _create(client, f"before {number}")
            assert "errors" not in _post(client, LIST)
            time.sleep(0.5)


def _fail_reads_until(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.wait(0.3):
            _post(client, LIST)


async def test_the_database_alerts_fire_on_a_live_service_whose_database_goes_away(
    server_factory: ServerFactory,
    prometheus_for: Callable[[int], Prometheus],
    cluster: PrivateCluster,
    rate_limit_redis: PrivateRedis,
) -> None:
    """The database and, at the same moment, the rate limiter's Redis go away."""
    server = server_factory(
        {
            **DEV_JSON,
            "PCF_DATABASE__URL": cluster.url,
            "PCF_RATE_LIMIT__STORAGE_URL": rate_limit_redis.url,
            "PCF_HEALTH__CHECK_INTERVAL_SECONDS": "0.5",
            "PCF_AUTHZ__STALE_WINDOW_SECONDS": "1",
            "PCF_DATABASE__WRITE_QUEUE_SIZE": "4",
            "PCF_DATABASE__WRITE_WAIT_SECONDS": "90",
        }
    )
    server.wait_until_ready()
    prometheus = prometheus_for(server.port)
    await asyncio.to_thread(_drive_traffic_while_healthy, server.url)

    cluster.stop()
    rate_limit_redis.stop()
    stop_reading = threading.Event()
    reader = threading.Thread(target=_fail_reads_until, args=(server.url, stop_reading))
    writes: list[Any] = []

    def write(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            writes.append(_create(client, f"queued {number}"))

    writers = [threading.Thread(target=write, args=(number,)) for number in range(4)]
    reader.start()
    for writer in writers:
        writer.start()
    try:
        await asyncio.to_thread(
            prometheus.eventually,
            lambda: set(prometheus.active_alerts()) >= DATABASE_ALERTS | REDIS_ALERTS,
            f"alerts {sorted(DATABASE_ALERTS | REDIS_ALERTS)} active",
            60.0,
        )
    finally:
        stop_reading.set()
        reader.join()
        cluster.start()
        rate_limit_redis.start()
        for writer in writers:
            writer.join(timeout=60)
    assert len(writes) == 4, writes
    assert all("errors" not in body for body in writes), writes

    # Two more outages: in and out of healthy five times within 15 minutes.
    healthy = f'pcf_api_readiness{{job="{JOB}", status="healthy"}}'
    prometheus.eventually(lambda: prometheus.value(healthy) == 1, "healthy again")
    for _ in range(2):
        cluster.stop()
        prometheus.eventually(lambda: prometheus.value(healthy) == 0, "unhealthy in a scrape")
        cluster.start()
        prometheus.eventually(lambda: prometheus.value(healthy) == 1, "healthy in a scrape")
    prometheus.eventually(
        lambda: set(prometheus.active_alerts()) >= FLAPPING_ALERTS, "readiness flapping"
    )


def _slow_reads_until(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            _post(client, LIST)


async def test_latency_and_process_alerts_fire_on_a_live_service(
    server_factory: ServerFactory, prometheus_for: Callable[[int], Prometheus], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **DEV_JSON,
        "PCF_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/notes.db",
        "PCF_SERVER__PORT": str(port),
        # Every /graphql request takes 1.2 s: slower than the 0.5 s objective and the 1 s p99.
        "PCF_TESTING__DELAY_SECONDS": "1.2",
        "PCF_TESTING__DELAY_PATHS": "/graphql",
    }
    server = server_factory(env)
    server.wait_until_ready()
    prometheus = prometheus_for(port)

    stop = threading.Event()
    readers = [
        threading.Thread(target=_slow_reads_until, args=(server.url, stop)) for _ in range(4)
    ]
    for reader in readers:
        reader.start()
    try:
        await asyncio.to_thread(
            prometheus.eventually,
            lambda: set(prometheus.active_alerts()) >= LATENCY_ALERTS,
            f"alerts {sorted(LATENCY_ALERTS)} active",
            60.0,
        )
    finally:
        stop.set()
        for reader in readers:
            reader.join()

    # Three restarts on the same address, each seen by a scrape.
    started = f'process_start_time_seconds{{job="{JOB}"}}'
    seen = {prometheus.value(started)}

    def new_start_time() -> float | None:
        value = prometheus.value(started)  # None while the target is down
        return value if value is not None and value not in seen else None

    for _ in range(3):
        server.terminate()
        assert server.wait(timeout=30) == 0, server.output()
        server = server_factory(env)
        server.wait_until_ready()
        seen.add(prometheus.eventually(new_start_time, "a new start time"))
    assert len(seen) == 4
    prometheus.eventually(
        lambda: "PcfApiRestarting" in prometheus.active_alerts(), "PcfApiRestarting active"
    )

    server.terminate()
    assert server.wait(timeout=30) == 0
    prometheus.eventually(
        lambda: set(prometheus.active_alerts()) >= PROCESS_ALERTS,
        f"alerts {sorted(PROCESS_ALERTS)} active",
    )


def test_the_trouble_tests_make_every_alert_fire() -> None:
    fired = DATABASE_ALERTS | REDIS_ALERTS | FLAPPING_ALERTS | LATENCY_ALERTS | PROCESS_ALERTS
    assert fired == {rule["alert"] for rule in rules() if "alert" in rule}


FLOOD_SECRET = "flood-test-hs256-secret-0123456789abcdef"


def _invalid_requests() -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(body, headers) of requests that are the client's fault, one of each kind the issue
    found counted as server failures: NUL in text and in a token's subject, page sizes out of
    range, and time claims of the wrong type."""
    now = int(time.time())

    def token(**claims: Any) -> dict[str, str]:
        encoded = jwt.encode({"sub": "alice", "exp": now + 300, **claims}, FLOOD_SECRET, "HS256")
        return {"Authorization": f"Bearer {encoded}"}

    limit = "query Paging($n: Int) { notes(limit: $n) { totalCount } }"
    search = "query Finding($q: String!) { searchNotes(query: $q) { id } }"
    note = {"title": "t", "content": "a\x00", "author": "alice"}
    return [
        ({"query": CREATE, "variables": {"i": note}}, {}),
        ({"query": search, "variables": {"q": "a\x00"}}, {}),
        ({"query": limit, "variables": {"n": 1e20}}, {}),
        ({"query": limit, "variables": {"n": 2**63}}, {}),
        ({"query": limit, "variables": {"n": 2**31}}, {}),
        ({"query": limit, "variables": {"n": 2**31 - 1}}, {}),
        ({"query": LIST}, token(sub="ali\x00ce")),
        ({"query": LIST}, token(exp=str(now + 300))),
        ({"query": LIST}, token(exp=1e300)),
    ]


def _flood(url: str, seconds: float) -> int:
    """Send the invalid requests round after round for ``seconds``; the number sent."""
    requests = _invalid_requests()
    sent = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            for body, headers in requests:
                response = client.post("/graphql", json=body, headers=headers)
                assert 400 <= response.status_code < 500, response.text
                sent += 1
    return sent


def _graphql_requests_by_status(url: str) -> dict[str, float]:
    exposition = httpx.get(f"{url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "graphql_request_total":
                status = sample.labels["status"]
                totals[status] = totals.get(status, 0.0) + sample.value
    return totals


async def test_a_flood_of_invalid_input_leaves_the_availability_error_ratio_at_zero(
    server_factory: ServerFactory, prometheus_for: Callable[[int], Prometheus]
) -> None:
    with postgres_database() as url:
        server = server_factory(
            {
                **DEV_JSON,
                "PCF_DATABASE__URL": url,
                "PCF_AUTH__HS256_SECRET": FLOOD_SECRET,
                "PCF_RATE_LIMIT__ENABLED": "false",  # every request reaches the input checks
            }
        )
        server.wait_until_ready()
        prometheus = prometheus_for(server.port)

        sent = await asyncio.to_thread(_flood, server.url, 3.0)

        by_status = _graphql_requests_by_status(server.url)
        server_side = {status: by_status.get(status, 0.0) for status in SERVER_SIDE.split("|")}
        assert server_side == dict.fromkeys(server_side, 0.0), by_status
        assert by_status.get("INVALID_INPUT", 0) + by_status.get("UNAUTHORIZED", 0) >= sent
        ratio = f'pcf_api:slo_availability_errors:ratio_rate5m{{job="{JOB}"}}'
        seen = f'sum(increase(graphql_request_total{{job="{JOB}"}}[5m]))'

        def flood_recorded() -> bool:
            return (prometheus.value(seen) or 0) >= sent / 2 and prometheus.value(ratio) is not None

        await asyncio.to_thread(
            prometheus.eventually, flood_recorded, "the flood in the recorded error ratio"
        )
        assert prometheus.value(ratio) == 0.0
