"""A real server's output: JSON lines with the required fields, and no secret anywhere."""

from __future__ import annotations

import secrets
import signal

import httpx

from support.servers import DEV_JSON, ServerFactory

REQUIRED_FIELDS = ("timestamp", "level", "module", "trace_id", "message")


def test_no_configured_secret_or_credential_header_reaches_any_log_line(
    server_factory: ServerFactory,
) -> None:
    configured_secret = "cfg-" + secrets.token_urlsafe(32)
    bearer = "tok-" + secrets.token_urlsafe(24)
    cookie = "ck-" + secrets.token_urlsafe(24)
    server = server_factory(
        {**DEV_JSON, "PCF_LOG__LEVEL": "DEBUG", "PCF_AUTH__HS256_SECRET": configured_secret}
    )
    server.wait_until_ready()

    headers = {"Authorization": f"Bearer {bearer}", "Cookie": f"session={cookie}"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for path in ("/health", "/health/ready", "/version", "/missing", f"/{configured_secret}"):
            client.get(path)
        client.post("/health", content=b"{}")
        client.get("/missing", headers={"Authorization": configured_secret})
        client.get(f"/{bearer}", headers={"Authorization": f"Bearer {bearer}"})

    server.terminate()
    assert server.wait() == 0
    output = server.output()
    for value in (configured_secret, bearer, cookie):
        assert value not in output
    assert "[REDACTED]" in output  # the requests did log, redacted


def test_every_line_is_json_with_the_five_required_fields(server_factory: ServerFactory) -> None:
    server = server_factory({**DEV_JSON, "PCF_LOG__LEVEL": "DEBUG"})
    server.wait_until_ready()
    with httpx.Client(base_url=server.url) as client:
        client.get("/health")
        client.get("/missing")
    server.terminate(signal.SIGINT)
    assert server.wait() == 0

    lines = server.log_lines()
    assert len(lines) > 5
    for line in lines:
        assert list(line)[:5] == list(REQUIRED_FIELDS)
    modules = {line["module"] for line in lines}
    assert {"uvicorn.error", "pcf_api.server", "pcf_api.access"} <= modules


def test_each_request_has_one_trace_id_in_its_log_lines_and_response_header(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(DEV_JSON)
    server.wait_until_ready()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = httpx.get(
        f"{server.url}/missing",
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.headers["x-trace-id"] == trace_id
    assert response.json()["error"]["trace_id"] == trace_id
    generated = httpx.get(f"{server.url}/other").headers["x-trace-id"]
    assert len(generated) == 32
    assert generated != trace_id
    server.terminate()
    server.wait()

    access = [
        line
        for line in server.log_lines()
        if line["module"] == "pcf_api.access" and line["path"] in ("/missing", "/other")
    ]
    assert [line["trace_id"] for line in access] == [trace_id, generated]
    assert [line["path"] for line in access] == ["/missing", "/other"]
