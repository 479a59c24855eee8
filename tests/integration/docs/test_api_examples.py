"""docs/api.md's examples, run as written against `make run`, and its schema against the code.

The curl blocks run in bash; the Python subscription client runs with the virtualenv's Python and
the JavaScript one with node, graphql-ws and ws installed from ``node/package-lock.json`` (`npm
ci` when node_modules is missing or stale, as tests/browser does). Each client must print the
note the mutation example creates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pcf_api.graphql.graphiql import packages
from pcf_api.graphql.schema import build_schema
from support.docs import ROOT, Checkout, checkout, fenced_blocks
from support.servers import free_port

API = ROOT / "docs" / "api.md"
TRY_IT = {"after": "## Try it", "before": "## Schema"}
CURL = fenced_blocks(API, "sh", **TRY_IT)
PYTHON_CLIENT = fenced_blocks(API, "python", **TRY_IT)
JS_CLIENT = fenced_blocks(API, "js", **TRY_IT)
NODE = Path(__file__).with_name("node")
SCHEMA_BEGIN, SCHEMA_END = "<!-- pcf-api schema: begin -->\n", "<!-- pcf-api schema: end -->"


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    """One development server for the module: the examples only add notes."""
    for made in checkout(tmp_path_factory.mktemp("docs") / "pcf-api", free_port()):
        made.start_server_block("make run")
        yield made


def answer_of(reader: Checkout, block: str) -> dict[str, Any]:
    result = reader.run(block)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_api_md_has_the_examples_this_test_runs() -> None:
    assert len(CURL) == 3
    assert len(PYTHON_CLIENT) == len(JS_CLIENT) == 1


def test_the_schema_in_api_md_is_the_one_pcf_api_schema_prints() -> None:
    text = API.read_text(encoding="utf-8")
    documented = text[text.index(SCHEMA_BEGIN) + len(SCHEMA_BEGIN) : text.index(SCHEMA_END)]

    expected = f"```graphql\n{build_schema().as_str()}\n```\n"
    assert documented == expected, (
        "docs/api.md's schema is stale: replace the block between the `pcf-api schema` markers "
        "with the output of `.venv/bin/pcf-api schema`"
    )


def test_the_query_example_answers_with_a_connection(reader: Checkout) -> None:
    answer = answer_of(reader, CURL[0].text)

    assert set(answer) == {"data"}
    assert set(answer["data"]["notes"]) == {"totalCount", "edges"}


def test_the_mutation_example_creates_the_note_from_its_variables(reader: Checkout) -> None:
    answer = answer_of(reader, CURL[1].text)

    created = answer["data"]["createNote"]
    assert created["title"] == "Groceries"
    assert created["id"].startswith("notes:")


def test_the_error_example_names_the_field_and_the_rule(reader: Checkout) -> None:
    answer = answer_of(reader, CURL[2].text)

    assert "data" not in answer
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert (error["extensions"]["field"], error["extensions"]["constraint"]) == ("limit", "range")
    assert error["message"].startswith("limit must be between 1 and 100")
    documented = " ".join(API.read_text(encoding="utf-8").split())
    assert error["message"] in documented


def receive_one_created_note(reader: Checkout, client: subprocess.Popen[str]) -> str:
    """Create notes with the mutation example until the subscribed client prints one and exits
    (its subscription may start a moment after the socket opens)."""
    deadline = time.monotonic() + 30
    while client.poll() is None and time.monotonic() < deadline:
        reader.run(CURL[1].text)
        time.sleep(0.3)
    if client.poll() is None:
        client.kill()
    out, err = client.communicate(timeout=10)
    assert client.returncode == 0, out + err
    return out


def test_the_python_subscription_client_prints_the_next_note_created(reader: Checkout) -> None:
    script = reader.path / "subscribe.py"
    script.write_text(reader.localised(PYTHON_CLIENT[0].text), encoding="utf-8")
    client = subprocess.Popen(
        [".venv/bin/python", "subscribe.py"],
        cwd=reader.path,
        env=reader.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    out = receive_one_created_note(reader, client)

    event = json.loads(out)
    assert event["noteCreated"]["title"] == "Groceries"
    assert event["noteCreated"]["author"] == "demo"


def _npm_ci_if_needed(npm: str) -> None:
    installed = NODE / "node_modules" / ".package-lock.json"
    lock = NODE / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.host_only  # node and npm
def test_the_javascript_graphql_ws_client_prints_the_next_note_created(
    reader: Checkout, tmp_path: Path
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "node is needed: apt-get install nodejs"
    assert npm, "npm is needed: apt-get install npm"
    _npm_ci_if_needed(npm)
    # A project that ran `npm install`: the script beside (a link to) node_modules.
    (tmp_path / "node_modules").symlink_to(NODE / "node_modules")
    script = tmp_path / "subscribe.mjs"
    script.write_text(reader.localised(JS_CLIENT[0].text), encoding="utf-8")
    client = subprocess.Popen(
        [node, script.name],
        cwd=tmp_path,
        env=reader.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    out = receive_one_created_note(reader, client)

    event = json.loads(out)
    assert event["noteCreated"]["title"] == "Groceries"


def test_the_graphiql_packages_listed_are_the_ones_the_page_loads() -> None:
    text = API.read_text(encoding="utf-8")
    listed = text[
        text.index("<!-- graphiql packages: begin -->") : text.index(
            "<!-- graphiql packages: end -->"
        )
    ]
    names = [part.strip("`") for part in listed.splitlines()[1].split(", ")]

    assert names == packages()
    offline = fenced_blocks(API, "sh", after="### GraphiQL", before="### Browser apps")[0].text
    assert f"for package in {' '.join(packages())}; do" in offline
