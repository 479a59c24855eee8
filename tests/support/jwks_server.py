"""A local OIDC issuer: discovery document, JWKS with RSA and EC keys made at test time, and
token minting. Keys can be rotated and the issuer can go down, like a real identity provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from support.jsonserver import Answer, JsonServer

AUDIENCE = "pcf-api"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any] = field(default_factory=dict)

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims, self.private_key, self.algorithm, headers={"kid": self.kid, **headers}
        )


def rsa_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "RS256", private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid, "use": "sig"})


class JwksServer(JsonServer):
    """``/.well-known/openid-configuration`` and ``/jwks``; ``issuer`` is the server's URL."""

    def __init__(self) -> None:
        super().__init__()
        self.rsa = rsa_key("rsa-1")
        self.ec = ec_key("ec-1")
        self.keys: list[SigningKey] = [self.rsa, self.ec]
        self.failing = False  # answer 503 instead of the documents
        self.discovery_overrides: dict[str, Any] = {}  # e.g. another "issuer"; None drops a key

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks"]

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if self.failing:
            return 503, {"error": "unavailable"}
        if method == "GET" and path == "/.well-known/openid-configuration":
            document = {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                **self.discovery_overrides,
            }
            return 200, {key: value for key, value in document.items() if value is not None}
        if method == "GET" and path == "/jwks":
            return 200, {"keys": [key.public_jwk for key in self.keys]}
        return 404, {"error": "not found"}

    def rotate(self, new: SigningKey, *, drop: SigningKey | None = None) -> None:
        self.keys = [key for key in self.keys if key is not drop] + [new]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def token(self, key: SigningKey | None = None, **claims: Any) -> str:
        """A token signed by ``key`` (the RSA key by default); ``claim=None`` leaves it out."""
        return (key or self.rsa).sign(self.claims(**claims))
