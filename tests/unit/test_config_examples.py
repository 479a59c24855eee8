"""The example files under config/ stay loadable and say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcf_api.config import ConfigError, load_settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_development_example_loads_with_the_development_profile() -> None:
    loaded = load_settings(environ={}, config_file=CONFIG_DIR / "development.toml")
    settings = loaded.settings
    assert settings.environment == "development"
    assert settings.log.format == "console"
    assert settings.auth.demo_user == "demo"


def test_production_example_reads_its_secrets_from_mounted_files(tmp_path: Path) -> None:
    url = tmp_path / "database-url"
    url.write_text("postgresql+asyncpg://pcf:s3cret-password@db.internal/pcf\n")
    hs256 = tmp_path / "hs256"
    hs256.write_text("k" * 40)
    metrics_password = tmp_path / "metrics-password"
    metrics_password.write_text("scrape-" + "p" * 20)
    text = (CONFIG_DIR / "production.toml").read_text()
    text = text.replace("/var/run/secrets/pcf-api/database-url", str(url))
    text = text.replace("/var/run/secrets/pcf-api/hs256-secret", str(hs256))
    text = text.replace("/var/run/secrets/pcf-api/metrics-password", str(metrics_password))
    config = tmp_path / "production.toml"
    config.write_text(text)

    settings = load_settings(environ={}, config_file=config).settings
    assert settings.environment == "production"
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value().endswith("@db.internal/pcf")
    assert settings.auth.hs256_secret is not None
    assert settings.auth.hs256_secret.get_secret_value() == "k" * 40
    assert "s3cret-password" in settings.secret_values()
    assert settings.metrics.port == 9090
    assert settings.tracing.enabled
    assert settings.tracing.sample_ratio == 0.1


def test_production_example_without_its_secret_files_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={}, config_file=CONFIG_DIR / "production.toml")
    assert any("database.url_file" in problem for problem in refused.value.problems)
