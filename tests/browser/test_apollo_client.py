"""A real browser, a real client: Apollo Client in Debian's Chromium against pcf-api in production.

pcf-api runs as `pcf-api serve` in its production configuration (PostgreSQL, HS256 JWTs, CORS
allowing origin A only). The page in ``page/`` (Apollo Client with its HTTP link, the
persisted-queries link and a graphql-ws link, bundled with esbuild) is served from origin A and,
unchanged, from origin C, which is not allowed. Chromium is driven headless by Playwright; what
the page sees comes back from ``window.pcf`` as plain values. See README.md beside this file.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, Page, Playwright, WebSocket, sync_playwright
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin, Subprotocol

from support.databases import postgres_database
from support.servers import PCF_API, ServerProcess, clean_environ, free_port, start_server

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
CHROMIUM = Path(os.environ.get("PCF_TEST_CHROMIUM", "/usr/bin/chromium"))
# Playwright never downloads a browser here: it drives Debian's Chromium.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HS256_SECRET = "browser-test-hs256-Secret-0123456789-abcdefgh"
NOTES = 25
PAGE_SIZE = 10
PERSISTED_METRIC = re.compile(r'^graphql_persisted_queries_total\{outcome="(\w+)"\} (\S+)$', re.M)
CREATE = "mutation($i: CreateNoteInput!) { createNote(input: $i) { id } }"


def _token(subject: str) -> str:
    return jwt.encode({"sub": subject, "exp": time.time() + 3600}, HS256_SECRET, "HS256")


# ---- the page: npm ci when needed, esbuild into a temporary directory --------------------------


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: {hint} (bash .ci/run installs it)", pytrace=False)
    return path


def _npm_ci_if_needed(npm: str) -> None:
    """`npm ci` when node_modules is missing or older than the lock file (a fresh clone, a bump)."""
    installed = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("node", "apt-get install nodejs (Node 18 or later)")
    npm = _require("npm", "apt-get install npm")
    _npm_ci_if_needed(npm)
    out = tmp_path_factory.mktemp("page")
    esbuild = HERE / "node_modules" / ".bin" / "esbuild"
    result = subprocess.run(
        [
            str(esbuild),
            str(HERE / "page" / "app.ts"),
            "--bundle",
            "--format=iife",
            "--target=chrome120",
            f"--outfile={out / 'app.js'}",
            "--log-level=warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"esbuild failed:\n{result.stdout}\n{result.stderr}"
    shutil.copy(HERE / "page" / "index.html", out / "index.html")
    return out


class _StaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class StaticOrigin:
    port: int
    server: ThreadingHTTPServer

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve(directory: Path) -> StaticOrigin:
    handler = functools.partial(_StaticHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return StaticOrigin(server.server_address[1], server)


@dataclass
class Origins:
    allowed: StaticOrigin  # A
    other: StaticOrigin  # C


@pytest.fixture(scope="module")
def origins(page_dir: Path) -> Iterator[Origins]:
    allowed, other = _serve(page_dir), _serve(page_dir)
    yield Origins(allowed, other)
    for origin in (allowed, other):
        origin.server.shutdown()
        origin.server.server_close()


# ---- pcf-api in production -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, origins: Origins) -> Iterator[ServerProcess]:
    with postgres_database() as url:
        env = {
            "PCF_ENVIRONMENT": "production",
            "PCF_LOG__FORMAT": "json",
            "PCF_DATABASE__URL": url,
            "PCF_AUTH__HS256_SECRET": HS256_SECRET,
            "PCF_CORS__ALLOW_ORIGINS": origins.allowed.origin,
            "PCF_SERVER__PORT": str(free_port()),
            "PCF_SERVER__DRAIN_SECONDS": "0.2",
        }
        # Production does not migrate on its own: `pcf-api migrate` runs first, as a deploy does.
        migrate = subprocess.run(
            [str(PCF_API), "migrate"],
            env=clean_environ(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        server = start_server(tmp_path_factory.mktemp("api"), env)
        try:
            server.wait_until_ready(timeout=30)
            yield server
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def _create_as(api: ServerProcess, subject: str, title: str) -> str:
    """Another client (not the browser) creates a note over plain HTTP."""
    response = httpx.post(
        f"{api.url}/graphql",
        json={
            "query": CREATE,
            "variables": {"i": {"title": title, "content": "c", "author": subject}},
        },
        headers={"Authorization": f"Bearer {_token(subject)}"},
        timeout=10,
    )
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    return str(body["data"]["createNote"]["id"])


def _persisted_counts(api: ServerProcess) -> dict[str, float]:
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for match in PERSISTED_METRIC.finditer(text):
        counts[match.group(1)] = float(match.group(2))
    return counts


# ---- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=30_000
    )
    yield browser
    browser.close()


@dataclass
class BrowserPage:
    page: Page
    console: list[str]
    sockets: list[WebSocket]
    frames_sent: list[str]
    socket_errors: list[str]
    token: str

    def call(self, function: str, *args: Any) -> Any:
        """``window.pcf.<function>(*args)`` in the page; promises are awaited."""
        return self.page.evaluate(
            "([name, args]) => window.pcf[name](...args)", [function, list(args)]
        )


@pytest.fixture
def open_page(browser: Browser, api: ServerProcess) -> Iterator[Any]:
    """``open_page(origin, subject)``: the page from that origin, in a fresh browser context
    (its own cookies, storage and cache), with a token for ``subject`` in its URL."""
    contexts = []

    def open_(origin: StaticOrigin, subject: str) -> BrowserPage:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        token = _token(subject)
        opened = BrowserPage(page, [], [], [], [], token)
        page.on("console", lambda message: opened.console.append(message.text))
        page.on("pageerror", lambda error: opened.console.append(f"pageerror: {error}"))

        def on_socket(socket: WebSocket) -> None:
            opened.sockets.append(socket)
            socket.on("framesent", lambda payload: opened.frames_sent.append(str(payload)))
            socket.on("socketerror", lambda error: opened.socket_errors.append(str(error)))

        page.on("websocket", on_socket)
        query = httpx.QueryParams({"api": api.url, "token": token})
        page.goto(f"{origin.origin}/index.html?{query}")
        page.wait_for_function("() => window.pcf !== undefined", timeout=10_000)
        return opened

    yield open_
    for context in contexts:
        context.close()


def _subject(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- the scenario --------------------------------------------------------------------------------


def test_pages_through_25_notes_with_relay_cursors_while_another_client_creates_notes(
    api: ServerProcess, origins: Origins, open_page: Any
) -> None:
    subject = _subject("pager")
    browser = open_page(origins.allowed, subject)
    created = []
    for n in range(NOTES):
        result = browser.call("createNote", f"note {n:02}", subject)
        assert result["ok"], f"createNote from origin A failed: {result}"
        created.append(result["note"]["id"])
    newest_first = created[::-1]

    first = browser.call("firstPage", PAGE_SIZE)
    assert first["ok"], f"first page (notes(first: {PAGE_SIZE})) failed: {first}"
    assert first["ids"] == newest_first[:PAGE_SIZE]
    assert first["pageInfo"]["hasNextPage"] is True

    between = [_create_as(api, subject, f"between {n}") for n in range(3)]
    second = browser.call("fetchMore", PAGE_SIZE)
    assert second["ok"], f"fetchMore after endCursor failed: {second}"
    assert second["ids"] == newest_first[: 2 * PAGE_SIZE], "page 2 is not the next 10 notes"

    between += [_create_as(api, subject, f"between {n}") for n in range(3, 6)]
    third = browser.call("fetchMore", PAGE_SIZE)
    assert third["ok"], f"fetchMore after endCursor failed: {third}"

    merged = third["ids"]
    repeated = sorted({i for i in merged if merged.count(i) > 1})
    skipped = [i for i in newest_first if i not in merged]
    assert not repeated, f"notes repeated across pages: {repeated}"
    assert not skipped, f"notes skipped across pages: {skipped}"
    # Newest first: the notes created meanwhile are newer than the first page, so a cursor walk
    # never meets them (an offset walk would repeat three notes on each later page).
    assert merged == newest_first
    assert not set(between) & set(merged)
    assert third["pageInfo"]["hasNextPage"] is False


def test_persisted_queries_link_registers_then_sends_hash_only_requests_that_succeed(
    api: ServerProcess, origins: Origins, open_page: Any
) -> None:
    subject = _subject("apq")
    browser = open_page(origins.allowed, subject)

    # A document the server has never seen: miss, registration, then a hash-only hit.
    before = _persisted_counts(api)
    cycle = browser.call("persistedCycle", uuid.uuid4().hex[:12])
    assert [r["ok"] for r in cycle["results"]] == [True, True], cycle
    sent = [
        (r["method"], r["hasQuery"], r["status"], r["errorCodes"])
        for r in browser.call("requests")
        if r["operationName"] == cycle["operationName"]
    ]
    assert sent == [
        ("GET", False, 404, ["PERSISTED_QUERY_NOT_FOUND"]),  # hash only: unknown
        ("POST", True, 200, []),  # the link's retry with the document registers it
        ("GET", False, 200, []),  # hash only again: served from the registered document
    ], sent
    after = _persisted_counts(api)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("miss", "registered", "hit")}
    assert delta == {"miss": 1, "registered": 1, "hit": 1}, (before, after)

    # The app's own operations: after their first registration every request is hash only.
    for n in range(3):
        result = browser.call("createNote", f"apq {n}", subject)
        assert result["ok"], f"createNote through the persisted-queries link failed: {result}"
    first = browser.call("firstPage", 2)
    assert first["ok"], f"notes(first: 2) through the persisted-queries link failed: {first}"
    more = browser.call("fetchMore", 2)
    assert more["ok"], (
        f"fetchMore through the persisted-queries link failed: {more}; "
        f"pages: {json.dumps(first)}; requests: {json.dumps(browser.call('requests')[-3:])}"
    )
    requests: list[dict[str, Any]] = browser.call("requests")
    for name, method in (("CreateNote", "POST"), ("NotesPage", "GET")):
        sent_for = [r for r in requests if r["operationName"] == name]
        assert all(r["persistedHash"] for r in sent_for), sent_for
        hash_only_ok = [
            r for r in sent_for if not r["hasQuery"] and r["status"] == 200 and not r["errorCodes"]
        ]
        assert len(hash_only_ok) >= len(sent_for) - 2, f"{name}: {json.dumps(sent_for)}"
        assert {r["method"] for r in hash_only_ok} == {method}, sent_for
        # The document travels only right after PERSISTED_QUERY_NOT_FOUND (registration).
        for i, request in enumerate(sent_for):
            if request["hasQuery"]:
                assert i > 0, sent_for
                assert "PERSISTED_QUERY_NOT_FOUND" in sent_for[i - 1]["errorCodes"], sent_for


def test_subscribes_with_the_token_only_in_connection_init_and_sees_another_clients_create(
    api: ServerProcess, origins: Origins, open_page: Any
) -> None:
    subject = _subject("watcher")
    browser = open_page(origins.allowed, subject)
    browser.call("subscribeNoteCreated")
    browser.page.wait_for_function(
        "() => window.pcf.wsLog().some(e => e.event === 'connected' || e.event === 'closed')",
        timeout=10_000,
    )
    ws_log = browser.call("wsLog")
    assert any(e["event"] == "connected" for e in ws_log), (
        f"the WebSocket from origin A (token in connection_init only) was not acknowledged: "
        f"{ws_log}; socket errors: {browser.socket_errors}"
    )
    init = [json.loads(f) for f in browser.frames_sent if '"connection_init"' in f]
    assert init == [
        {"type": "connection_init", "payload": {"authorization": f"Bearer {browser.token}"}}
    ], browser.frames_sent

    time.sleep(0.5)  # let the server register the subscription with the broker
    note_id = _create_as(api, subject, "made elsewhere")
    browser.page.wait_for_function(
        "() => window.pcf.events().length > 0 || window.pcf.subscriptionErrors().length > 0",
        timeout=10_000,
    )
    assert browser.call("subscriptionErrors") == []
    assert browser.call("events") == [
        {"__typename": "Note", "id": note_id, "title": "made elsewhere", "author": subject}
    ]
    browser.call("stopSubscription")


def test_from_a_disallowed_origin_the_fetch_is_blocked_by_cors(
    origins: Origins, open_page: Any
) -> None:
    allowed = open_page(origins.allowed, "alice")
    assert allowed.call("rawFetch")["ok"] is True, "control: origin A's fetch must go through"

    other = open_page(origins.other, "alice")
    raw = other.call("rawFetch")
    assert raw["ok"] is False, f"origin C's fetch was not blocked: {raw}"
    assert raw["error"]["name"] == "TypeError", raw  # "Failed to fetch": the browser refused
    through_apollo = other.call("createNote", "from C", "alice")
    assert through_apollo["ok"] is False, through_apollo
    assert any("blocked by CORS policy" in line for line in other.console), other.console


def test_from_a_disallowed_origin_the_websocket_upgrade_is_refused(
    api: ServerProcess, origins: Origins, open_page: Any
) -> None:
    other = open_page(origins.other, "alice")
    other.call("subscribeNoteCreated")
    other.page.wait_for_function(
        "() => window.pcf.wsLog().some(e => e.event === 'closed')", timeout=10_000
    )
    ws_log = other.call("wsLog")
    events = [e["event"] for e in ws_log]
    assert "opened" not in events, f"the upgrade from origin C was accepted: {ws_log}"
    closed = next(e for e in ws_log if e["event"] == "closed")
    assert closed["code"] == 1006, ws_log  # no handshake: the browser saw the upgrade fail
    assert any("403" in error for error in other.socket_errors), other.socket_errors

    # The refusal is the origin's, not a missing credential: the same upgrade from origin C
    # with a valid token in the header (which a non-browser client may send) is refused too,
    # while without an Origin header it is accepted.
    url = f"ws://127.0.0.1:{api.port}/graphql"
    bearer = {"Authorization": f"Bearer {_token('alice')}"}
    protocol = [Subprotocol("graphql-transport-ws")]
    with (
        pytest.raises(InvalidStatus) as refused,
        ws_connect(
            url,
            origin=Origin(origins.other.origin),
            additional_headers=bearer,
            subprotocols=protocol,
            open_timeout=5,
        ),
    ):
        pass
    assert refused.value.response.status_code == 403
    with ws_connect(url, additional_headers=bearer, subprotocols=protocol, open_timeout=5):
        pass
