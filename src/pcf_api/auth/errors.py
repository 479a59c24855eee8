"""How identity fails: 401 with an RFC 6750 challenge, or 503 when no signing keys can be had.

A module of its own because both the key sources and token verification raise them. The
description is one of a few fixed sentences: never token content, never library messages.
"""

from __future__ import annotations

from typing import Literal

from pcf_api.errors import AppError, ErrorCode

REALM = "pcf-api"

ErrorKind = Literal["invalid_request", "invalid_token"]


class AuthenticationError(AppError):
    """401 UNAUTHORIZED. ``error`` is RFC 6750's code (None when no credentials were sent, as
    the RFC asks); ``description`` is safe to show and is used as the message."""

    def __init__(self, error: ErrorKind | None, description: str) -> None:
        self.error = error
        self.description = description
        challenge = f'Bearer realm="{REALM}"'
        if error is not None:
            challenge += f', error="{error}", error_description="{description}"'
        super().__init__(
            ErrorCode.UNAUTHORIZED, description, headers={"WWW-Authenticate": challenge}
        )


class AuthenticationUnavailable(AppError):
    """503: no signing keys could ever be loaded, so no asymmetric token can be checked."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.SERVICE_UNAVAILABLE,
            "Token signing keys are temporarily unavailable.",
            headers={"Retry-After": "5"},
        )


def invalid_token(description: str) -> AuthenticationError:
    return AuthenticationError("invalid_token", description)
