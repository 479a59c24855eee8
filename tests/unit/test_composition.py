"""The composition root: one place builds every long-lived part and hands each what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from pcf_api.compat import CompatibilityError
from pcf_api.composition import build_service
from pcf_api.config import DatabaseSettings, Settings
from pcf_api.health import HealthRegistry

pytestmark = pytest.mark.anyio


def with_database(tmp_path: Path) -> Settings:
    url = SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}")
    return Settings(environment="development", database=DatabaseSettings(url=url))


def test_without_a_database_the_service_is_its_side_doors() -> None:
    service = build_service(Settings(environment="development"))
    assert service.notes is None
    assert service.ready
    paths = {getattr(route, "path", None) for route in service.app.routes}
    assert {"/health", "/health/ready", "/version"} <= paths
    assert "/graphql" not in paths


def test_both_transports_share_one_admission_and_one_set_of_services(tmp_path: Path) -> None:
    service = build_service(with_database(tmp_path))
    notes = service.notes
    assert notes is not None
    assert notes.http.admission is notes.admission
    assert notes.subscriptions.admission is notes.admission
    assert notes.http.services is notes.services
    assert notes.subscriptions.services is notes.services
    assert notes.admission.rate_limiter is notes.services.rate_limiter
    assert notes.services.store.database is notes.database


def test_nothing_is_admitted_before_start_up(tmp_path: Path) -> None:
    service = build_service(with_database(tmp_path))
    assert service.notes is not None
    assert not service.ready
    assert not service.notes.admission.is_open


def test_the_health_registry_given_is_the_one_checks_are_registered_in(tmp_path: Path) -> None:
    health = HealthRegistry(version="test")
    service = build_service(with_database(tmp_path), health=health)
    assert service.health is health
    assert health.report()["services"]["database"] == {"critical": True, "status": "unknown"}


async def test_before_close_closes_every_subscription_socket(tmp_path: Path) -> None:
    service = build_service(with_database(tmp_path))
    assert service.notes is not None
    closed: list[int] = []

    class Socket:
        async def close(self, code: int) -> None:
            closed.append(code)

    service.notes.subscriptions.connections.add(Socket())  # type: ignore[arg-type]
    await service.before_close()
    assert closed == [1001]


def test_a_library_outside_its_tested_range_stops_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pcf_api.compat.version", lambda _: "0.0.1")
    with pytest.raises(CompatibilityError, match=r"0\.0\.1 is installed"):
        build_service(Settings(environment="development"))
