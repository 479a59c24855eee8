"""`helm test` check for pcf-api, run by the image's own Python (no shell or curl in the image).

1. GET /health/ready must answer 200 with status healthy or degraded.
2. One GraphQL query. With an HS256 secret available (PCF_AUTH__HS256_SECRET_FILE or
   PCF_AUTH__HS256_SECRET, as the app gets it), a 60-second token is minted from it and the query
   must return data without errors. Without one (JWKS/OIDC only: the test cannot sign a token),
   the query without a token must answer 401 with a `WWW-Authenticate: Bearer` challenge, which
   proves the GraphQL endpoint and its authentication are wired.
Exit code 0 on success, 1 with a message on stderr otherwise.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("PCF_TEST_URL", "http://127.0.0.1:8080").rstrip("/")
QUERY = "{ notes(limit: 1) { totalCount } }"


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def request(path: str, body: bytes | None = None, token: str | None = None):
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(BASE + path, data=body, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310 - fixed http URL
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, OSError) as error:
        fail(f"cannot reach {BASE}{path}: {getattr(error, 'reason', error)}")
        raise  # not reached: fail() exits


def hs256_secret() -> str | None:
    path = os.environ.get("PCF_AUTH__HS256_SECRET_FILE")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    return os.environ.get("PCF_AUTH__HS256_SECRET") or None


def mint(secret: str) -> str:
    import jwt  # noqa: PLC0415 - PyJWT (in the image), needed only on this path

    now = int(time.time())
    claims = {"sub": "helm-test", "iat": now, "exp": now + 60}
    if os.environ.get("PCF_AUTH__ISSUER"):
        claims["iss"] = os.environ["PCF_AUTH__ISSUER"]
    if os.environ.get("PCF_AUTH__AUDIENCE"):
        claims["aud"] = os.environ["PCF_AUTH__AUDIENCE"]
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> None:
    status, _, body = request("/health/ready")
    if status != 200:
        fail(f"/health/ready answered {status}: {body[:300]!r}")
    ready = json.loads(body)
    if ready.get("status") not in ("healthy", "degraded"):
        fail(f"/health/ready status is {ready.get('status')!r}")
    print(f"ok: /health/ready {ready['status']} (version {ready.get('version')})")

    payload = json.dumps({"query": QUERY}).encode()
    secret = hs256_secret()
    if secret:
        status, _, body = request("/graphql", payload, token=mint(secret))
        answer = json.loads(body) if body else {}
        if status != 200 or answer.get("errors") or "data" not in answer:
            fail(f"GraphQL query answered {status}: {body[:300]!r}")
        print(f"ok: GraphQL {QUERY} -> {json.dumps(answer['data'])}")
    else:
        status, headers, body = request("/graphql", payload)
        challenge = {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "")
        if status != 401 or not challenge.startswith("Bearer"):
            fail(f"GraphQL without a token answered {status} ({challenge!r}), expected 401 Bearer")
        print("ok: GraphQL without a token answers 401 with a Bearer challenge (no HS256 secret)")


if __name__ == "__main__":
    main()
