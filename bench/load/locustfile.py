"""Locust workload and step shape for pcf-api (see workload.py for the request mix).

Normally run by ``bench/load/run.py`` (``make load-test``), which starts pcf-api, runs this file
headless and reports per step. By hand, against a server you started:

    .venv/bin/locust -f bench/load/locustfile.py --headless --host http://127.0.0.1:8080 \
        --auth demo --step-rates 50,100 --step-seconds 20

(``--auth demo`` sends ``X-Demo-User: load-0001`` …, for a development server; ``--auth hs256
--hs256-secret-file FILE [--audience AUD]`` mints one HS256 token per user). Without
``--samples-out`` the per-step table (no CPU figures) is printed when the run ends.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from locust import FastHttpUser, LoadTestShape, events, task
from locust.user.wait_time import constant_throughput

# locust puts its working directory (the repository root) on the path
from bench.load import stepreport, workload

_identities = itertools.count(1)
_samples: list[tuple[float, float, bool, str, str]] = []
_run: dict[str, Any] = {"t0": None, "written": False}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("pcf-api step load")
    group.add_argument(
        "--step-rates",
        default=workload.DEFAULT_RATES,
        help="offered requests/s of each step, comma-separated",
    )
    group.add_argument("--step-seconds", type=float, default=25, help="length of each step")
    group.add_argument(
        "--settle-seconds", type=float, default=5, help="start of each step left unmeasured"
    )
    group.add_argument("--user-rate", type=float, default=2.0, help="requests/s of each user")
    group.add_argument("--auth", choices=("demo", "hs256"), default="demo")
    group.add_argument("--hs256-secret-file", default="", help="for --auth hs256")
    group.add_argument("--audience", default="", help="`aud` of the minted tokens")
    group.add_argument("--samples-out", default="", help="write every request here (JSON)")
    group.add_argument("--seed", type=int, default=7, help="random seed of the users")


def _steps(options: Any) -> list[stepreport.Step]:
    return stepreport.plan(
        stepreport.parse_rates(options.step_rates),
        options.user_rate,
        options.step_seconds,
        options.settle_seconds,
    )


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        NotesClient.wait_time = constant_throughput(options.user_rate)


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    started = start_time if start_time is not None else time.time() - response_time / 1000
    error = "" if exception is None else str(exception)[:120]
    _samples.append((started, response_time, exception is None, name, error))


@events.test_stop.add_listener
def _write(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if _run["written"] or _run["t0"] is None or options is None:
        return
    _run["written"] = True
    steps = _steps(options)
    windows = stepreport.windows(steps, _run["t0"])
    if options.samples_out:
        Path(options.samples_out).write_text(
            json.dumps(
                {
                    "t0": _run["t0"],
                    "windows": [dataclasses.asdict(window) for window in windows],
                    "samples": _samples,
                }
            )
        )
    else:
        samples = [stepreport.Sample(*sample) for sample in _samples]
        print(stepreport.markdown_table(stepreport.aggregate(samples, windows)), file=sys.stderr)


class StepLoad(LoadTestShape):
    """``--step-rates``: each step runs rate / ``--user-rate`` users for ``--step-seconds``."""

    def tick(self) -> tuple[int, float] | None:
        if self.runner is None:
            return None
        options = self.runner.environment.parsed_options
        if _run["t0"] is None:
            _run["t0"] = time.time() - self.get_run_time()
        step = stepreport.step_at(_steps(options), self.get_run_time())
        if step is None:
            return None
        change = abs(step.users - self.get_current_user_count())
        return step.users, float(min(max(change, 1), 100))  # each change within about a second


class NotesClient(FastHttpUser):
    """One API client (see workload.py)."""

    wait_time = constant_throughput(2.0)
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        number = next(_identities)
        self.me = workload.user_name(number)
        self.rng = random.Random(options.seed * 100_003 + number)
        if options.auth == "hs256":
            secret = Path(options.hs256_secret_file).read_text().strip()
            claims: dict[str, Any] = {"sub": self.me, "exp": int(time.time()) + 4 * 3600}
            if options.audience:
                claims["aud"] = options.audience
            token = jwt.encode(claims, secret, algorithm="HS256")
            self.headers = {"Authorization": f"Bearer {token}"}
        else:
            self.headers = {"X-Demo-User": self.me}
        self.cycle = itertools.cycle(workload.rotated_cycle(self.rng))
        self.own: list[str] = []
        self.readable: list[str] = []
        self.total = 0
        data = self.graphql("notes (start)", workload.NOTES_AT_START, {})
        if data is not None:
            self.total = data["notes"]["totalCount"]
            for edge in data["notes"]["edges"]:
                node = edge["node"]
                (self.own if node["author"] == self.me else self.readable).append(node["id"])
        while len(self.own) < 2:
            if not self.create():
                break

    def graphql(self, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
        """POST /graphql; a failure unless HTTP 200 with data and no errors."""
        payload = {"query": query, "variables": variables}
        with self.client.post(
            "/graphql", json=payload, headers=self.headers, name=name, catch_response=True
        ) as response:
            body: Any = None
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = None
            errors = body.get("errors") if isinstance(body, dict) else None
            code = ""
            if errors:
                code = str((errors[0].get("extensions") or {}).get("code", "")) or "error"
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code} {code}".strip())
                return None
            if errors or not isinstance(body, dict) or not body.get("data"):
                response.failure(f"GraphQL {code or 'no data'}")
                return None
            response.success()
            data: dict[str, Any] = body["data"]
            return data

    def create(self) -> bool:
        data = self.graphql(
            "create",
            workload.CREATE,
            {
                "input": {
                    "title": workload.title(self.rng),
                    "content": workload.content(self.rng),
                    "author": self.me,
                }
            },
        )
        if data is None:
            return False
        self.own.append(data["createNote"]["id"])
        self.total += 1
        return True

    @task
    def next_request(self) -> None:
        operation = next(self.cycle)
        rng = self.rng
        if operation == "notes" or (operation == "note" and not (self.readable or self.own)):
            pages = max(1, min(5, (self.total + 9) // 10))
            data = self.graphql("notes", workload.NOTES, {"offset": 10 * rng.randrange(pages)})
            if data is not None:
                self.total = data["notes"]["totalCount"]
        elif operation == "note" and (self.readable or self.own):
            self.graphql("note", workload.NOTE, {"id": rng.choice(self.readable + self.own)})
        elif operation == "search":
            self.graphql("search", workload.SEARCH, {"q": rng.choice(workload.VOCABULARY)})
        elif operation == "update" and self.own:
            self.graphql(
                "update",
                workload.UPDATE,
                {"id": rng.choice(self.own), "input": {"content": workload.content(rng)}},
            )
        else:
            self.create()
