"""Which browser origins may call the API: one rule for CORS and for the WebSocket upgrade.

The rule is Starlette's ``CORSMiddleware``'s: an origin is allowed when it is listed exactly in
``cors.allow_origins`` (``*`` allows every origin) or matches ``cors.allow_origin_regex`` as a
whole. Pure, so both transports (and their tests) apply the same decision.
"""

from __future__ import annotations

import re
from collections.abc import Collection


def origin_allowed(
    origin: str, allow_origins: Collection[str], allow_origin_regex: str | None
) -> bool:
    """Whether a page on ``origin`` (the ``Origin`` header, as the browser sent it) is allowed."""
    if "*" in allow_origins or origin in allow_origins:
        return True
    return allow_origin_regex is not None and re.fullmatch(allow_origin_regex, origin) is not None
