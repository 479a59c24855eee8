"""GraphiQL without internet: docs/api.md's offline recipe, run as written, in headless Chromium.

The recipe fetches the page's packages with `npm pack` and starts `make run` with
`graphql.graphiql_assets_dir`; the browser may then reach nothing but the server (every other
request is aborted and recorded), and GraphiQL must come up, run a query and show its answer. The
same page with the default CDN stays at "Loading...", which is what a newcomer offline saw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from support.docs import ROOT, Checkout, checkout, fenced_blocks
from support.servers import free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("PCF_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
OFFLINE_RECIPE = fenced_blocks(
    ROOT / "docs" / "api.md", "sh", after="### GraphiQL", before="### Browser apps"
)[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as running:
        launched = running.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        yield launched
        launched.close()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Checkout]:
    yield from checkout(tmp_path / "pcf-api", free_port())


def offline_page(browser: Browser, reader: Checkout) -> tuple[Page, list[str]]:
    """A page that can reach only the server; the URLs it was refused are collected."""
    refused: list[str] = []
    page = browser.new_page()

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(reader.url + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    return page, refused


def test_graphiql_runs_a_query_offline_with_the_assets_served_by_pcf_api(
    browser: Browser, reader: Checkout
) -> None:
    reader.start_server_block(OFFLINE_RECIPE.text)
    page, refused = offline_page(browser, reader)

    page.goto(f"{reader.url}/graphql")
    page.locator(".graphiql-query-editor .CodeMirror").first.wait_for(timeout=30_000)
    page.evaluate(
        "document.querySelector('.graphiql-query-editor .CodeMirror')"
        ".CodeMirror.setValue('{ notes(first: 1) { totalCount } }')"
    )
    page.locator(".graphiql-execute-button").click()
    page.get_by_text('"totalCount": 0').wait_for(timeout=15_000)

    assert refused == []
    assets = (reader.path / "data" / "graphiql-assets").iterdir()
    assert sorted(path.name for path in assets) == [
        "@graphiql",
        "graphiql@3.8.3",
        "js-cookie@3.0.5",
        "react-dom@18.2.0",
        "react@18.2.0",
    ]


def test_with_the_default_cdn_and_no_internet_the_page_stays_blank(
    browser: Browser, reader: Checkout
) -> None:
    reader.start_server_block("make run")
    page, refused = offline_page(browser, reader)

    page.goto(f"{reader.url}/graphql")
    page.wait_for_load_state("load")

    assert refused
    assert all(url.startswith("https://unpkg.com/") for url in refused)
    assert page.locator("#graphiql").inner_text() == "Loading..."
