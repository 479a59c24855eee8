"""The README's "Try it" blocks, run as written against `make run` in a checkout.

Each ```sh block runs in bash with `-e -o pipefail`, so a command that fails fails the test; a
block that ends in `make run` restarts the server the way it says (see support/docs.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.docs import ROOT, Checkout, checkout, fenced_blocks
from support.servers import free_port

README = ROOT / "README.md"
BLOCKS = fenced_blocks(README, "sh", after="## Try it", before="## Command line")


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Checkout]:
    yield from checkout(tmp_path / "pcf-api", free_port())


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    assert [block.text.strip().splitlines()[-1] for block in BLOCKS] == [
        ".venv/bin/pcf-api version",
        "PCF_AUTH__HS256_SECRET_FILE=data/hs256-secret make run",
        BLOCKS[2].text.strip().splitlines()[-1],
    ]
    assert "pcf-api token" in BLOCKS[2].text


def test_the_first_block_runs_after_make_run(reader: Checkout) -> None:
    reader.start_server_block("make run")

    # The one change to the block: `healthcheck` finds the server by PCF_SERVER__PORT, as it
    # would find 8080 by default.
    result = reader.run(BLOCKS[0].text, {"PCF_SERVER__PORT": str(reader.port)})

    assert result.returncode == 0, result.stdout + result.stderr
    compact = result.stdout.replace(" ", "")
    assert '{"data":{"createNote":{"id":"notes:' in compact
    assert '"title":"Hello","author":"demo"' in compact
    assert "healthy" in result.stdout
    assert '# environment "development" (env PCF_ENVIRONMENT)' in result.stdout
    assert "# refused" not in result.stdout
    assert "type Query {" in (reader.path / "schema.graphql").read_text()
    assert result.stdout.rstrip().splitlines()[-1][0].isdigit()  # the version


def test_the_bearer_token_blocks_create_a_note_as_the_token_subject(reader: Checkout) -> None:
    reader.start_server_block(BLOCKS[1].text)

    result = reader.run(BLOCKS[2].text)

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {"data": {"createNote": {"author": "alice"}}}
