"""bench/instructions.py: which servers a run compares, and how it reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import instructions

SINK = "http://127.0.0.1:4318/v1/traces"


def test_named_variants_configure_metrics_and_tracing() -> None:
    assert instructions.variant("baseline", SINK).baseline
    assert instructions.variant("pcf-api", SINK).env == {}
    assert instructions.variant("no-metrics", SINK).env == {"PCF_METRICS__ENABLED": "false"}
    traced = instructions.variant("tracing-0.25", SINK)
    assert traced.env == {
        "PCF_TRACING__ENABLED": "true",
        "PCF_TRACING__ENDPOINT": SINK,
        "PCF_TRACING__SAMPLE_RATIO": "0.25",
    }
    assert not traced.baseline


def test_a_variant_at_another_checkout_runs_that_checkout_s_source(tmp_path: Path) -> None:
    other = instructions.variant(f"tracing-0.1@{tmp_path}", SINK)
    assert other.label == f"tracing-0.1@{tmp_path}"
    assert other.env["PYTHONPATH"] == str(tmp_path.resolve() / "src")
    assert other.env["PCF_TRACING__SAMPLE_RATIO"] == "0.1"


@pytest.mark.parametrize(
    "label", ["tracing-2", "tracing-x", "tracing-", "metrics", "", "pcf-api@", "baseline@/tmp"]
)
def test_unknown_variants_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match=label or "^$"):
        instructions.variant(label, SINK)


def test_the_report_compares_each_variant_with_pcf_api_and_the_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = {
        "sqlite": {
            "baseline": {"notes": 12_000_000.0},
            "pcf-api": {"notes": 4_000_000.0},
            "no-metrics": {"notes": 3_900_000.0},
        }
    }
    instructions.report(results, 300)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sqlite")]
    assert rows == [
        "| sqlite | notes | baseline | 12.000 | +200.0 % |  |",
        "| sqlite | notes | pcf-api | 4.000 | +0.0 % | 3.00x |",
        "| sqlite | notes | no-metrics | 3.900 | -2.5 % | 3.08x |",
    ]


def test_the_browser_variant_sends_an_allowed_origin_to_a_cors_enabled_server() -> None:
    browser = instructions.variant("browser", SINK)
    assert browser.headers == {"Origin": instructions.BROWSER_ORIGIN}
    assert browser.env["PCF_CORS__ALLOW_ORIGINS"] == instructions.BROWSER_ORIGIN
    assert browser.env["PCF_GRAPHQL__ONLY_TRUSTED_DOCUMENTS"] == "true"
