"""deploy/helm/pcf-api: lint, strict schema validation of the rendered objects against Kubernetes
1.29-1.34, and the properties the issue asks of the rendered manifests."""

from __future__ import annotations

import base64
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcf_api.config import known_keys
from support.helm import (
    CHART,
    CI_VALUES,
    ROOT,
    app_container,
    deployment,
    env_of,
    find,
    one,
    render,
    render_error,
    run,
    template_text,
    tool,
)
from support.scripts import load_script

# Value sets every structural test runs on: (id, values, ci files).
VALUE_SETS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("defaults", {}, ()),
    ("production", {}, ("production-values.yaml",)),
    ("all-toggles", {}, ("all-toggles-values.yaml",)),
    ("vault", {}, ("vault-values.yaml",)),
    (
        "no-metrics-port-no-autoscaling-env-secrets",
        {
            "config": {"metrics": {"port": None}},
            "autoscaling": {"enabled": False},
            "secrets": {"mountAs": "env", "values": {"hs256Secret": "x" * 40}},
        },
        (),
    ),
    (
        "ingress-httproute",
        {
            "ingress": {"enabled": True, "className": "nginx", "hosts": ["api.example.com"]},
            "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]},
        },
        (),
    ),
]
IDS = [name for name, _, _ in VALUE_SETS]
KUBERNETES_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
# Custom resources: no schema in kubernetes-validate; their shape is asserted below instead.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ExternalSecret", "HTTPRoute"}
SECRET_VALUES = {
    "databaseUrl": "postgresql+asyncpg://app:db-password-4b1d@db:5432/app",
    "hs256Secret": "hs256-secret-value-that-is-long-enough-0123456789",
    "metricsPassword": "metrics-password-9e3c",
}


def pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of the Deployment, the migration Job and the test Pod."""
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            found.append(
                (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
            )
        elif obj["kind"] == "Pod":
            found.append((f"Pod/{obj['metadata']['name']}", obj["spec"]))
    return found


# --------------------------------------------------------------------------------------------
# lint and schema validation


@pytest.mark.parametrize(
    "files",
    [(), ("production-values.yaml",), ("all-toggles-values.yaml",), ("vault-values.yaml",)],
    ids=["defaults", "production", "all-toggles", "vault"],
)
def test_helm_lint_strict(files: tuple[str, ...]) -> None:
    args = [arg for name in files for arg in ("-f", str(CI_VALUES / name))]
    result = run(tool("helm"), "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("rendered")
    paths = []
    for name, values, files in VALUE_SETS:
        result = template_text(values, *files)
        assert result.returncode == 0, result.stderr
        path = directory / f"{name}.yaml"
        path.write_text(result.stdout, encoding="utf-8")
        paths.append(path)
    return paths


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_validate_strictly(version: str, rendered_files: list[Path]) -> None:
    result = run(
        tool("kubernetes-validate"), "--strict", "-k", version, *map(str, rendered_files),
        check=False,
    )  # fmt: skip
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert not errors, "\n".join(errors)
    assert result.returncode == 0, "\n".join(lines)
    for line in lines:
        if line.startswith("WARN"):
            kind = re.search(r"schema for kind (\w+)", line)
            assert kind, line
            assert kind.group(1) in CUSTOM_KINDS, line
    assert any("passed for resource deployment/" in line for line in lines)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"probes": {"timeoutSeconds": 3}}, "timeoutSeconds"),
        ({"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"replicas": 3}, "additional properties 'replicas'"),
        ({"config": {"environment": "prod"}}, "environment"),
        ({"config": {"database": {"url": "postgresql://u:p@h/d"}}}, "/config/database"),
        ({"extraConfig": {"auth": {"hs256_secret": "x" * 40}}}, "/extraConfig/auth"),
        ({"config": {"bogus_section": {"x": 1}}}, "bogus_section"),
        ({"secrets": {"mountAs": "volume"}}, "mountAs"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "targetCPUUtilization"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"service": {"port": 70000}}, "port"),
        ({"config": {"cors": {"allow_origins": "https://a.example.com"}}}, "allow_origins"),
        ({"config": {"cors": {"allow_origins": ["https://a.example.com/app"]}}}, "allow_origins"),
        ({"config": {"cors": {"max_age": 100000}}}, "max_age"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_secret_settings_in_config_are_refused_even_past_the_schema() -> None:
    # The template's own guard, for a secret key the schema's list might miss in the future.
    result = template_text(
        {"extraConfig": {"events": {"redis_url": "redis://x"}}},
        extra=("--skip-schema-validation",),
    )
    assert result.returncode != 0
    assert "config.events.redis_url is a secret" in result.stderr


# --------------------------------------------------------------------------------------------
# the pods


@pytest.mark.parametrize(("name", "values", "files"), VALUE_SETS, ids=IDS)
def test_probes_and_rollout(name: str, values: dict[str, Any], files: tuple[str, ...]) -> None:
    objects = render(values, *files)
    container = app_container(objects)
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] == 5, probe
        assert container[probe]["httpGet"]["port"] == "http"
    strategy = deployment(objects)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }


@pytest.mark.parametrize(("name", "values", "files"), VALUE_SETS, ids=IDS)
def test_every_pod_is_locked_down(
    name: str, values: dict[str, Any], files: tuple[str, ...]
) -> None:
    objects = render(values, *files)
    found = pods(objects)
    assert {kind.split("/")[0] for kind, _ in found} == {"Deployment", "Job", "Pod"}
    for where, spec in found:
        assert spec["automountServiceAccountToken"] is False, where
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, where
        assert pod_context["runAsUser"] == 65532, where
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] == 65532
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, where
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", where
            # The Vault agent's token is for the agent only.
            assert "vault-token" not in mounts.values(), where
    account = find(objects, "ServiceAccount")
    assert all(sa["automountServiceAccountToken"] is False for sa in account)


def test_deployment_spreads_and_scrapes() -> None:
    objects = render()
    spec = deployment(objects)["spec"]["template"]
    keys = {c["topologyKey"] for c in spec["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    annotations = spec["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "9090"
    no_port = render({"config": {"metrics": {"port": None}}})
    assert (
        deployment(no_port)["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
        == "8080"
    )
    assert (
        "prometheus.io/scrape"
        not in deployment(render({"scrapeAnnotations": False}))["spec"]["template"]["metadata"][
            "annotations"
        ]
    )


@pytest.mark.parametrize(
    ("server", "grace"),
    [({}, 45), ({"drain_seconds": 10, "shutdown_timeout": 60}, 80), ({"drain_seconds": 2.5}, 43)],
)
def test_grace_period_covers_drain_and_shutdown(server: dict[str, Any], grace: int) -> None:
    spec = deployment(render({"config": {"server": server}}))["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == grace
    drain = server.get("drain_seconds", 5)
    shutdown = server.get("shutdown_timeout", 30)
    assert spec["terminationGracePeriodSeconds"] > drain + shutdown


def test_grace_period_given_too_short_is_refused() -> None:
    assert "must exceed" in render_error({"terminationGracePeriodSeconds": 35})
    spec = deployment(render({"terminationGracePeriodSeconds": 36}))["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 36


def test_ports_follow_the_settings() -> None:
    objects = render({"config": {"server": {"port": 9000}, "metrics": {"port": 9100}}})
    ports = {p["name"]: p["containerPort"] for p in app_container(objects)["ports"]}
    assert ports == {"http": 9000, "metrics": 9100}
    service = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert service["http"]["targetPort"] == "http"
    assert service["metrics"]["port"] == 9100
    config = one(objects, "ConfigMap", "pcf-api")["data"]
    assert config["PCF_SERVER__PORT"] == "9000"
    assert config["PCF_METRICS__PORT"] == "9100"

    objects = render({"config": {"metrics": {"port": None}}})
    assert [p["name"] for p in one(objects, "Service")["spec"]["ports"]] == ["http"]
    assert [p["name"] for p in app_container(objects)["ports"]] == ["http"]
    assert "PCF_METRICS__PORT" not in one(objects, "ConfigMap", "pcf-api")["data"]


# --------------------------------------------------------------------------------------------
# configuration and secrets


def test_configmap_holds_the_non_secret_settings() -> None:
    data = one(render(), "ConfigMap", "pcf-api")["data"]
    assert data["PCF_ENVIRONMENT"] == "production"
    assert data["PCF_SERVER__DRAIN_SECONDS"] == "5"
    assert data["PCF_LOG__FORMAT"] == "json"
    assert "PCF_AUTH__ISSUER" not in data  # empty values are left out
    assert all(re.fullmatch(r"PCF_[A-Z]+(__[A-Z0-9_]+)?", key) for key in data)
    extra = one(render({"extraConfig": {"graphql": {"max_depth": 10}}}), "ConfigMap", "pcf-api")
    assert extra["data"]["PCF_GRAPHQL__MAX_DEPTH"] == "10"


def test_cors_settings_render_as_environment_variables() -> None:
    default = one(render(), "ConfigMap", "pcf-api")["data"]
    assert "PCF_CORS__ALLOW_ORIGINS" not in default  # an empty list is left out: no origin
    assert "PCF_CORS__ALLOW_ORIGIN_REGEX" not in default
    regex = r"^https://[a-z0-9-]+\.preview\.example\.com$"
    cors = {
        "allow_origins": ["https://a.example.com", "https://b.example.com"],
        "allow_origin_regex": regex,
        "max_age": 120,
    }
    data = one(render({"config": {"cors": cors}}), "ConfigMap", "pcf-api")["data"]
    assert data["PCF_CORS__ALLOW_ORIGINS"] == "https://a.example.com,https://b.example.com"
    assert data["PCF_CORS__ALLOW_ORIGIN_REGEX"] == regex
    assert data["PCF_CORS__MAX_AGE"] == "120"
    assert data["PCF_CORS__ALLOW_CREDENTIALS"] == "false"


def test_configmap_names_are_settings_the_app_knows() -> None:
    keys = known_keys()
    for name, values, files in VALUE_SETS:
        for config in find(render(values, *files), "ConfigMap"):
            for variable in config.get("data", {}):
                if not variable.startswith("PCF_"):
                    continue
                key = variable.removeprefix("PCF_").lower().replace("__", ".")
                assert key in keys, f"{name}: {variable}"
                assert not keys[key], f"{name}: {variable} is a secret"


@pytest.mark.parametrize("mount_as", ["file", "env"])
def test_no_secret_value_in_any_configmap(mount_as: str) -> None:
    values = {
        "secrets": {"mountAs": mount_as, "keys": {"metricsPassword": True}, "values": SECRET_VALUES}
    }
    objects = render(values)
    secret = one(objects, "Secret", "pcf-api")
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {
        "database-url": SECRET_VALUES["databaseUrl"],
        "hs256-secret": SECRET_VALUES["hs256Secret"],
        "metrics-password": SECRET_VALUES["metricsPassword"],
    }
    for config in find(objects, "ConfigMap"):
        text = json.dumps(config)
        for value in [*SECRET_VALUES.values(), "db-password-4b1d"]:
            assert value not in text, config["metadata"]["name"]
    for obj in objects:
        if obj["kind"] not in ("Secret",):
            assert SECRET_VALUES["hs256Secret"] not in json.dumps(obj), obj["kind"]


def test_secrets_are_files_by_default() -> None:
    objects = render()
    container = app_container(objects)
    env = env_of(container)
    assert env["PCF_DATABASE__URL_FILE"] == "/var/run/secrets/pcf-api/database-url"
    assert env["PCF_AUTH__HS256_SECRET_FILE"] == "/var/run/secrets/pcf-api/hs256-secret"
    assert not any(name in env for name in ("PCF_DATABASE__URL", "PCF_AUTH__HS256_SECRET"))
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount == {"name": "secrets", "mountPath": "/var/run/secrets/pcf-api", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount would never see a rotated Secret
    volume = next(
        v
        for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )
    assert volume["secret"]["secretName"] == "pcf-api"
    assert [item["key"] for item in volume["secret"]["items"]] == ["database-url", "hs256-secret"]


def test_a_database_password_key_of_its_own_is_mounted_and_reloadable() -> None:
    values = {
        "secrets": {
            "keys": {"databasePassword": True},
            "values": {"databasePassword": "db-pw-rotates-7c1e"},
        },
        "config": {"secrets": {"reload_interval_seconds": 5}},
    }
    objects = render(values)
    env = env_of(app_container(objects))
    assert env["PCF_DATABASE__PASSWORD_FILE"] == "/var/run/secrets/pcf-api/database-password"
    volume = next(
        v
        for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )
    assert "database-password" in [item["key"] for item in volume["secret"]["items"]]
    config = one(objects, "ConfigMap", "pcf-api")["data"]
    assert config["PCF_SECRETS__RELOAD_INTERVAL_SECONDS"] == "5"
    assert "db-pw-rotates-7c1e" not in json.dumps(config)
    assert "/config/database" in render_error({"config": {"database": {"password": "x"}}})
    assert "reload_interval_seconds" in render_error(
        {"config": {"secrets": {"reload_interval_seconds": -1}}}
    )


def test_secrets_as_env_use_secret_key_refs() -> None:
    env = env_of(app_container(render({"secrets": {"mountAs": "env"}})))
    assert env["PCF_DATABASE__URL"] == {"secretKeyRef": {"name": "pcf-api", "key": "database-url"}}
    assert "PCF_DATABASE__URL_FILE" not in env


def test_existing_secret_for_production() -> None:
    objects = render({}, "production-values.yaml")
    assert not find(objects, "Secret", "pcf-api")
    template = deployment(objects)["spec"]["template"]
    assert "checksum/secret" not in template["metadata"]["annotations"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "secrets")
    assert volume["secret"]["secretName"] == "pcf-api-secrets"
    env = env_of(app_container(objects))
    assert "PCF_AUTH__HS256_SECRET_FILE" not in env  # production example: OIDC tokens only
    assert env["PCF_METRICS__PASSWORD_FILE"] == "/var/run/secrets/pcf-api/metrics-password"
    # The migration hook reads the same existing Secret (no hook copy of it).
    job = one(objects, "Job")
    job_volume = next(
        v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    )
    assert job_volume["secret"]["secretName"] == "pcf-api-secrets"
    assert [s["metadata"]["name"] for s in find(objects, "Secret")] == ["pcf-api-metrics-user"]


def test_checksums_roll_the_pods_on_config_and_secret_changes() -> None:
    base = {"secrets": {"values": SECRET_VALUES}}

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        result: dict[str, str] = deployment(render(values))["spec"]["template"]["metadata"][
            "annotations"
        ]
        return result

    first = annotations(base)
    assert re.fullmatch(r"[0-9a-f]{64}", first["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", first["checksum/secret"])
    assert annotations(base) == first  # deterministic
    same = annotations({**base, "replicaCount": 5, "autoscaling": {"enabled": False}})
    assert same["checksum/config"] == first["checksum/config"]
    assert same["checksum/secret"] == first["checksum/secret"]
    config_changed = annotations({**base, "config": {"log": {"level": "DEBUG"}}})
    assert config_changed["checksum/config"] != first["checksum/config"]
    assert config_changed["checksum/secret"] == first["checksum/secret"]
    rotated = {**SECRET_VALUES, "hs256Secret": SECRET_VALUES["hs256Secret"] + "-rotated"}
    secret_changed = annotations({"secrets": {"values": rotated}})
    assert secret_changed["checksum/secret"] != first["checksum/secret"]
    assert secret_changed["checksum/config"] == first["checksum/config"]


def test_chart_managed_secret_refuses_an_empty_required_value() -> None:
    assert "secrets.values.databaseUrl is empty" in render_error(
        {"secrets": {"values": {"databaseUrl": ""}}}
    )


def test_vault_renders_the_same_files() -> None:
    objects = render({}, "vault-values.yaml")
    assert not find(objects, "Secret")
    template = deployment(objects)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "pcf-api"
    assert annotations["vault.hashicorp.com/secret-volume-path"] == "/var/run/secrets/pcf-api"
    for name in ("database-url", "hs256-secret"):
        assert (
            annotations[f"vault.hashicorp.com/agent-inject-secret-{name}"] == "secret/data/pcf-api"
        )
        template_text_ = annotations[f"vault.hashicorp.com/agent-inject-template-{name}"]
        assert f'index .Data.data "{name}"' in template_text_
        assert 'with secret "secret/data/pcf-api"' in template_text_
    assert (
        annotations["vault.hashicorp.com/agent-service-account-token-volume-name"] == "vault-token"
    )
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert "secrets" not in volumes
    token = volumes["vault-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "vault"
    env = env_of(app_container(objects))
    assert env["PCF_DATABASE__URL_FILE"] == "/var/run/secrets/pcf-api/database-url"
    job = one(objects, "Job")["spec"]["template"]["metadata"]["annotations"]
    assert job["vault.hashicorp.com/agent-pre-populate-only"] == "true"


def test_external_secret_fills_the_mounted_secret() -> None:
    objects = render({}, "all-toggles-values.yaml")
    external = one(objects, "ExternalSecret")
    assert external["apiVersion"] == "external-secrets.io/v1"
    assert external["spec"]["target"]["name"] == "pcf-api-secrets"
    assert external["spec"]["secretStoreRef"] == {
        "name": "vault-backend",
        "kind": "ClusterSecretStore",
    }
    keys = {item["secretKey"] for item in external["spec"]["data"]}
    assert keys == {
        "database-url",
        "hs256-secret",
        "spicedb-preshared-key",
        "metrics-password",
        "events-redis-url",
        "rate-limit-storage-url",
        "tracing-headers",
    }
    assert all(
        item["remoteRef"]["property"] == item["secretKey"] for item in external["spec"]["data"]
    )
    assert not find(objects, "Secret", "pcf-api")
    env = env_of(app_container(objects))
    assert env["PCF_AUTHZ__SPICEDB_PRESHARED_KEY_FILE"].endswith("/spicedb-preshared-key")
    assert env["PCF_RATE_LIMIT__STORAGE_URL_FILE"].endswith("/rate-limit-storage-url")
    assert env["PCF_TRACING__HEADERS_FILE"].endswith("/tracing-headers")


# --------------------------------------------------------------------------------------------
# scaling, disruption, network


def test_hpa_and_its_behavior() -> None:
    objects = render()
    assert "replicas" not in deployment(objects)["spec"]  # the HPA owns it
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "pcf-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    metrics = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics["cpu"] == {"type": "Utilization", "averageUtilization": 70}
    assert metrics["memory"] == {"type": "Utilization", "averageUtilization": 80}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["selectPolicy"] == "Max"
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["selectPolicy"] == "Min"
    assert {p["type"] for p in behavior["scaleDown"]["policies"]} == {"Percent", "Pods"}


def test_hpa_pods_metric_and_toggle() -> None:
    hpa = one(render({}, "all-toggles-values.yaml"), "HorizontalPodAutoscaler")
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert pods_metric["pods"]["metric"]["name"] == "pcf_api_graphql_requests_per_second"
    assert pods_metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "300"}
    adapter = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    assert rule["name"]["as"] == "pcf_api_graphql_requests_per_second"
    assert 'route="/graphql"' in rule["metricsQuery"]

    off = render({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert not find(off, "HorizontalPodAutoscaler")
    assert deployment(off)["spec"]["replicas"] == 3


def test_pdb_toggle() -> None:
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == deployment(render())["spec"]["selector"]["matchLabels"]
    )
    assert not find(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget")
    min_available = one(
        render({"podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 2}}),
        "PodDisruptionBudget",
    )
    assert min_available["spec"]["minAvailable"] == 2
    assert "maxUnavailable" not in min_available["spec"]


def test_selectors_pick_the_api_pods_only() -> None:
    objects = render()
    selector = deployment(objects)["spec"]["selector"]["matchLabels"]
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert (
        one(objects, "NetworkPolicy", "pcf-api")["spec"]["podSelector"]["matchLabels"] == selector
    )
    for obj in objects:
        if obj["kind"] == "Job":
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["kind"] == "Pod":
            labels = obj["metadata"]["labels"]
        else:
            continue
        assert not all(labels.get(key) == value for key, value in selector.items()), obj["kind"]


def test_network_policy_default_deny_and_allowed_paths() -> None:
    policy = one(render(), "NetworkPolicy", "pcf-api")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    http, metrics = policy["ingress"]
    assert http["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in (http["from"])
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    egress_ports = [{p["port"] for p in rule["ports"]} for rule in policy["egress"]]
    assert egress_ports == [{53}, {5432}]  # DNS and the database, nothing else by default
    assert {p["protocol"] for p in policy["egress"][0]["ports"]} == {"UDP", "TCP"}
    assert not find(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_network_policy_opens_dependencies_that_are_configured() -> None:
    policy = one(render({}, "all-toggles-values.yaml"), "NetworkPolicy", "pcf-api")["spec"]
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 8443, 4318, 443, 6379}  # DNS, DB, SpiceDB, OTLP, issuer, Redis
    issuer = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 443)
    assert issuer["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in issuer["to"][0]["ipBlock"]["except"]
    assert {"podSelector": {}} in policy["ingress"][0]["from"]  # sameNamespace

    # Without a metrics port, Prometheus is let in on the API port.
    no_port = one(render({"config": {"metrics": {"port": None}}}), "NetworkPolicy", "pcf-api")[
        "spec"
    ]
    assert len(no_port["ingress"]) == 1
    assert any(
        "namespaceSelector" in peer and "podSelector" in peer
        for peer in no_port["ingress"][0]["from"]
    )


# --------------------------------------------------------------------------------------------
# monitoring, routing, hooks


def test_prometheus_rule_and_dashboard_come_from_the_sources() -> None:
    objects = render({}, "all-toggles-values.yaml")
    rule = one(objects, "PrometheusRule")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"] == source
    dashboard = one(objects, "ConfigMap", "pcf-api-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["pcf-api.json"]) == json.loads(
        (ROOT / "deploy" / "grafana" / "pcf-api.json").read_text()
    )
    monitor = one(objects, "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # external_service_health{service} must not be renamed to exported_service by the target label
    assert endpoint["honorLabels"] is True
    assert endpoint["basicAuth"]["password"] == {
        "name": "pcf-api-secrets",
        "key": "metrics-password",
    }
    # The alert rules select job=~".*pcf-api.*": the job is the Service name.
    assert "pcf-api" in one(objects, "Service")["metadata"]["name"]


def test_service_monitor_without_metrics_port_scrapes_http() -> None:
    monitor = one(
        render({"serviceMonitor": {"enabled": True}, "config": {"metrics": {"port": None}}}),
        "ServiceMonitor",
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert "basicAuth" not in monitor["spec"]["endpoints"][0]


def test_ingress_and_httproute() -> None:
    objects = render(VALUE_SETS[-1][1])
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "pcf-api", "port": {"name": "http"}}
    route = one(objects, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "pcf-api", "port": 80}]
    assert not find(render(), "Ingress")
    assert not find(render(), "HTTPRoute")


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    objects = render()
    job = one(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # On install the release's ConfigMap and Secret do not exist yet: hook copies, created first.
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    hook_config = one(objects, "ConfigMap", config_name)
    assert int(hook_config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert hook_config["data"] == one(objects, "ConfigMap", "pcf-api")["data"]
    hook_secret = one(objects, "Secret", "pcf-api-migrate")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert not find(render({"migration": {"enabled": False}}), "Job")


def test_helm_test_pod() -> None:
    objects = render()
    pod = one(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["/usr/bin/python3", "-I"]
    assert env_of(container)["PCF_TEST_URL"] == "http://pcf-api.pcf-api.svc:80"
    script = one(objects, "ConfigMap", "pcf-api-test")["data"]["check.py"]
    assert script == (CHART / "files" / "helm-test.py").read_text()
    # The NetworkPolicy lets the test pod in.
    http = one(objects, "NetworkPolicy", "pcf-api")["spec"]["ingress"][0]["from"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "test"
        for peer in http
    )
    assert not find(render({"tests": {"enabled": False}}), "Pod")


def test_image_reference() -> None:
    assert app_container(render())["image"] == "localhost/pcf-api:dev"  # scripts/build-image.sh
    assert app_container(render({}, "production-values.yaml"))["image"] == (
        "registry.example.com/pcf-api:0.1.0"
    )
    assert app_container(render({"image": {"tag": ""}}))["image"] == "localhost/pcf-api:0.1.0"
    digest = "sha256:" + "a" * 64
    assert app_container(render({"image": {"repository": "r/p", "digest": digest}}))["image"] == (
        f"r/p@{digest}"
    )


# --------------------------------------------------------------------------------------------
# generated files are current; the chart packages


def test_chart_files_match_their_sources() -> None:
    run("bash", str(ROOT / "scripts" / "sync-chart-files.sh"), "--check")


def test_readme_parameter_table_is_current() -> None:
    run(sys.executable, str(ROOT / "scripts" / "helm-readme.py"), "--check")


def test_every_value_is_documented() -> None:
    module = load_script(ROOT / "scripts" / "helm-readme.py", "helm_readme")
    text = (CHART / "values.yaml").read_text()
    documented = {path for path, _ in module.documented_keys(text)}

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and prefix not in documented:
            return [
                leaf for key, value in node.items() for leaf in leaves(value, f"{prefix}{key}.")
            ]
        return [prefix.rstrip(".")]

    missing = [
        leaf
        for leaf in leaves(yaml.safe_load(text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert not missing, f"values without a `# --` description: {missing}"


def test_plain_manifests_are_current() -> None:
    run("bash", str(ROOT / "scripts" / "render-manifests.sh"), "--check")


def test_chart_packages_with_its_files(tmp_path: Path) -> None:
    run(tool("helm"), "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("pcf-api-*.tgz")
    with tarfile.open(package) as archive:
        names = set(archive.getnames())
    for name in (
        "values.schema.json",
        "files/alerts.yaml",
        "files/pcf-api.json",
        "files/helm-test.py",
    ):
        assert f"pcf-api/{name}" in names
    assert not any("/ci/" in name for name in names) or "pcf-api/ci/production-values.yaml" in names
    result = run(
        tool("helm"), "template", "pcf-api", str(package), "--set", "prometheusRule.enabled=true",
    )  # fmt: skip
    assert "kind: PrometheusRule" in result.stdout


def test_migration_and_test_pods_have_their_own_network_policies() -> None:
    objects = render()
    migration = one(objects, "NetworkPolicy", "pcf-api-migration")["spec"]
    assert migration["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "migration"
    assert migration["ingress"] == []
    assert [{p["port"] for p in rule["ports"]} for rule in migration["egress"]] == [{53}, {5432}]
    test = one(objects, "NetworkPolicy", "pcf-api-test")["spec"]
    assert test["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert test["ingress"] == []
    api = test["egress"][1]
    assert api["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert api["to"] == [
        {"podSelector": {"matchLabels": deployment(objects)["spec"]["selector"]["matchLabels"]}}
    ]
    # Every pod the chart makes is selected by some policy.
    selectors = [p["spec"]["podSelector"]["matchLabels"] for p in find(objects, "NetworkPolicy")]
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["kind"] == "Pod":
            labels = obj["metadata"]["labels"]
        else:
            continue
        assert any(all(labels.get(k) == v for k, v in s.items()) for s in selectors), obj["kind"]


def test_vault_agent_may_reach_vault() -> None:
    objects = render({}, "vault-values.yaml")
    for name in ("pcf-api", "pcf-api-migration", "pcf-api-test"):
        ports = {
            p["port"]
            for rule in one(objects, "NetworkPolicy", name)["spec"]["egress"]
            for p in rule["ports"]
        }
        assert 8200 in ports, name
    ports = {
        p["port"]
        for rule in one(render(), "NetworkPolicy", "pcf-api")["spec"]["egress"]
        for p in rule["ports"]
    }
    assert 8200 not in ports


def test_checkov_finds_no_failures(tmp_path: Path) -> None:
    for name, values, files in VALUE_SETS:
        result = template_text(values, *files)
        (tmp_path / f"{name}.yaml").write_text(result.stdout, encoding="utf-8")
    result = run(
        tool("checkov"), "--directory", str(tmp_path), "--framework", "kubernetes",
        "--output", "json", "--skip-download", check=False,
    )  # fmt: skip
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert sum(report["summary"]["passed"] for report in reports) > 500
    # Every skip carries its justification.
    for report in reports:
        for check in report["results"]["skipped_checks"]:
            assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]
