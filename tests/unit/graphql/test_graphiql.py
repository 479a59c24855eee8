"""The GraphiQL page loads its assets from the configured place, and from nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcf_api.config import GraphQLSettings
from pcf_api.graphql.graphiql import ASSETS_PATH, CDN, packages, page

_ASSET_URL = re.compile(r'(?:src|href)="((?!data:)[^"]+)"')


def asset_urls(html: str) -> list[str]:
    return _ASSET_URL.findall(html)


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        pytest.param(GraphQLSettings(), CDN, id="default-cdn"),
        pytest.param(
            GraphQLSettings(graphiql_assets_url="https://npm.example.com/unpkg/"),
            "https://npm.example.com/unpkg",
            id="mirror",
        ),
        pytest.param(GraphQLSettings(graphiql_assets_dir=Path(".")), ASSETS_PATH, id="served"),
    ],
)
def test_every_asset_of_the_page_comes_from_the_configured_base(
    settings: GraphQLSettings, base: str
) -> None:
    urls = asset_urls(page(settings))

    assert len(urls) == 7
    assert all(url.startswith(base + "/") and "//" not in url.removeprefix(base) for url in urls)
    assert {url.removeprefix(base + "/").split("/")[0] for url in urls} <= {
        name.split("/")[0] for name in packages()
    }


def test_the_page_keeps_its_integrity_hashes() -> None:
    html = page(GraphQLSettings(graphiql_assets_dir=Path(".")))

    assert html.count('integrity="sha384-') == 7


def test_the_packages_are_named_with_their_versions() -> None:
    assert packages()[:2] == ["react@18.2.0", "react-dom@18.2.0"]
    assert all(re.fullmatch(r"(@[\w-]+/)?[\w.-]+@\d+\.\d+\.\d+", name) for name in packages())


def test_an_assets_url_must_be_http_or_a_path() -> None:
    with pytest.raises(ValueError, match="graphiql_assets_url"):
        GraphQLSettings(graphiql_assets_url="ftp://mirror")
