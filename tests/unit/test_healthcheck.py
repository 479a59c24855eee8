"""The healthcheck command finds the local server the way `serve` would, with the stdlib only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pcf_api.healthcheck import default_url


def test_default_url_is_loopback_8080_liveness() -> None:
    assert default_url(ready=False, environ={}) == "http://127.0.0.1:8080/health"
    assert default_url(ready=True, environ={}) == "http://127.0.0.1:8080/health/ready"


def test_environment_port_and_wildcard_hosts_map_to_loopback() -> None:
    environ = {"PCF_SERVER__PORT": "9090", "PCF_SERVER__HOST": "0.0.0.0"}
    assert default_url(ready=False, environ=environ) == "http://127.0.0.1:9090/health"
    environ = {"PCF_SERVER__HOST": "::"}
    assert default_url(ready=False, environ=environ) == "http://[::1]:8080/health"
    environ = {"PCF_SERVER__HOST": "10.1.2.3"}
    assert default_url(ready=False, environ=environ) == "http://10.1.2.3:8080/health"


def test_config_file_port_is_used_and_environment_wins_over_it(tmp_path: Path) -> None:
    config = tmp_path / "pcf.toml"
    config.write_text('[server]\nport = 7070\nhost = "0.0.0.0"\n')
    environ = {"PCF_CONFIG": str(config)}
    assert default_url(ready=False, environ=environ) == "http://127.0.0.1:7070/health"
    environ["PCF_SERVER__PORT"] = "7171"
    assert default_url(ready=False, environ=environ) == "http://127.0.0.1:7171/health"


def test_unreadable_config_file_falls_back_to_defaults(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    assert default_url(ready=False, environ={"PCF_CONFIG": str(broken)}).endswith(":8080/health")
    missing = {"PCF_CONFIG": str(tmp_path / "missing.toml")}
    assert default_url(ready=False, environ=missing).endswith(":8080/health")


def test_healthcheck_command_loads_no_third_party_module() -> None:
    """It runs as the image's HEALTHCHECK; importing the web stack would make it slow and heavy."""
    program = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from pcf_api import cli\n"
        "cli.main(['healthcheck', '--timeout', '0.5', '--url', 'http://127.0.0.1:9/health'])\n"
        "stdlib = set(sys.stdlib_module_names)\n"
        "loaded = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(loaded - stdlib - {'pcf_api'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
