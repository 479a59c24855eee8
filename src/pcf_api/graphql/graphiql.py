"""The GraphiQL page, with its scripts and styles loaded from where the settings say.

Strawberry's page loads React, GraphiQL and its explorer plugin from unpkg; without internet it
stays blank. The page is kept as Strawberry ships it (its subresource-integrity hashes pin the
exact files) and only the CDN base is replaced: by ``graphql.graphiql_assets_url`` (a mirror),
or by the path where ``graphql.graphiql_assets_dir`` is served from this process.
"""

from __future__ import annotations

import re

from strawberry.http.ides import get_graphql_ide_html

from pcf_api.config import GraphQLSettings

CDN = "https://unpkg.com"
ASSETS_PATH = "/graphiql/assets"
_ASSET = re.compile(re.escape(CDN) + r"/((?:@[^/\"]+/)?[^/@\"]+@[^/\"]+)/")


def assets_base(settings: GraphQLSettings) -> str:
    """The URL prefix the page's assets are loaded from."""
    if settings.graphiql_assets_dir is not None:
        return ASSETS_PATH
    return settings.graphiql_assets_url.rstrip("/")


def page(settings: GraphQLSettings) -> str:
    """The GraphiQL HTML with every asset under ``assets_base(settings)``."""
    return get_graphql_ide_html("graphiql").replace(CDN + "/", assets_base(settings) + "/")


def packages() -> list[str]:
    """The npm packages (``name@version``) the page loads, in the order it names them."""
    return list(dict.fromkeys(_ASSET.findall(get_graphql_ide_html("graphiql"))))
