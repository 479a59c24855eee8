"""Who is calling, in one import: the key sources (``keys``), token verification and the
request's caller (``tokens``) and how they fail (``errors``).

The names stay importable from here for the modules above auth/; inside the package, import
from the module that defines them.
"""

from pcf_api.auth.errors import AuthenticationError, AuthenticationUnavailable, ErrorKind
from pcf_api.auth.keys import JwksKeySet, KeySource, StaticKeys, parse_key_document
from pcf_api.auth.tokens import Authenticator, Identity, TokenVerifier, bearer_token

__all__ = [
    "AuthenticationError",
    "AuthenticationUnavailable",
    "Authenticator",
    "ErrorKind",
    "Identity",
    "JwksKeySet",
    "KeySource",
    "StaticKeys",
    "TokenVerifier",
    "bearer_token",
    "parse_key_document",
]
