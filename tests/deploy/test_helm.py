"""The Helm chart: lint, schema-valid manifests, and the behaviour the platform relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from careloop_cli.registry import SERVICES
from careloop_cli.wiring import (
    SECRET_SETTINGS,
    SECRETS_DIR_VARIABLE,
    required_settings,
    service_urls,
)

from .conftest import Renders
from .helmchart import (
    VALUE_SETS,
    HelmError,
    by_name,
    component,
    container_env,
    lint,
    of_kind,
    pod_spec,
    render,
)

pytestmark = pytest.mark.deploy

ALL_SERVICES = frozenset(SERVICES)
MINIMAL_SERVICES = frozenset({"gateway", "identity", "patients"})
SECRET_FILES = {
    "all": {"careloop_database_url"},
    "identity": {"careloop_bootstrap_token"},
    "messaging": {"careloop_twilio_auth_token", "careloop_smtp_password"},
    "referrals": {"careloop_smtp_password"},
}
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
HOOK_DELETE_POLICY = "before-hook-creation,hook-succeeded"

# kubernetes_validate ships schemas for built-in kinds only; ExternalSecret is a CRD, so it is
# checked against this subset of the external-secrets.io/v1 CRD (the fields the chart writes).
EXTERNAL_SECRET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "external-secrets.io/v1"},
        "kind": {"const": "ExternalSecret"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretStoreRef", "target", "data"],
            "properties": {
                "refreshInterval": {"type": "string"},
                "secretStoreRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "kind"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"enum": ["SecretStore", "ClusterSecretStore"]},
                    },
                },
                "target": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
                        "deletionPolicy": {"enum": ["Delete", "Merge", "Retain"]},
                    },
                },
                "data": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["secretKey", "remoteRef"],
                        "properties": {
                            "secretKey": {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"},
                            "remoteRef": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["key"],
                                "properties": {
                                    "key": {"type": "string"},
                                    "property": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


# Likewise for cert-manager's Certificate (cert-manager.io/v1), the fields the chart writes.
CERTIFICATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef", "dnsNames"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "duration": {"type": "string", "pattern": "^([0-9]+(ns|us|ms|s|m|h))+$"},
                "renewBefore": {"type": "string", "pattern": "^([0-9]+(ns|us|ms|s|m|h))+$"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "usages": {
                    "type": "array",
                    "items": {"enum": ["server auth", "digital signature", "key encipherment"]},
                },
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "issuerRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": {"type": "string"},
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {"ExternalSecret": EXTERNAL_SECRET_SCHEMA, "Certificate": CERTIFICATE_SCHEMA}
CRDS_PER_SERVICE = {"external-secrets": "ExternalSecret", "tls": "Certificate"}


def https_url(service: str) -> str:
    """A service's in-cluster base URL: its own Service, over the services' TLS."""
    return f"https://careloop-{service}:{SERVICES[service].default_port}"


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments keyed by the service they run."""
    return {component(doc): doc for doc in of_kind(docs, "Deployment")}


def migration_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Migration Jobs keyed by the service they migrate."""
    jobs = of_kind(docs, "Job")
    return {
        component(job).removesuffix("-migrate"): job
        for job in jobs
        if component(job).endswith("-migrate")
    }


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-service NetworkPolicies keyed by service."""
    return {
        component(doc): doc
        for doc in of_kind(docs, "NetworkPolicy")
        if component(doc) in ALL_SERVICES
    }


def allowed_callers(policy: dict[str, Any]) -> set[str]:
    """Components whose pods a NetworkPolicy lets in (pod-selector peers only)."""
    callers: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            selector = peer.get("podSelector")
            if selector is None or "namespaceSelector" in peer:
                continue
            for expression in selector.get("matchExpressions", []):
                assert expression["key"] == "app.kubernetes.io/component"
                assert expression["operator"] == "In"
                callers.update(expression["values"])
            if "app.kubernetes.io/component" in selector.get("matchLabels", {}):
                callers.add(selector["matchLabels"]["app.kubernetes.io/component"])
    return callers


def egress_components(policy: dict[str, Any]) -> dict[str, set[int]]:
    """Careloop components a NetworkPolicy lets its pods call, with the ports."""
    targets: dict[str, set[int]] = {}
    for rule in policy["spec"].get("egress", []):
        for peer in rule.get("to", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if labels.get("app.kubernetes.io/part-of") or "namespaceSelector" in peer:
                continue
            if "app.kubernetes.io/component" in labels:
                ports = {port["port"] for port in rule["ports"]}
                targets.setdefault(labels["app.kubernetes.io/component"], set()).update(ports)
    return targets


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = of_kind(docs, "Deployment") + of_kind(docs, "Job")
    return found


# 1-2. Rendering and `helm lint --strict` under every value set.


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_strict_passes(value_set: str) -> None:
    output = lint(VALUE_SETS[value_set])
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_renders_one_workload_set_per_enabled_service(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    expected = MINIMAL_SERVICES if value_set == "minimal" else ALL_SERVICES
    for kind in ("Deployment", "Service", "ConfigMap", "ServiceAccount"):
        service_docs = [doc for doc in of_kind(docs, kind) if component(doc) in ALL_SERVICES]
        assert {component(doc) for doc in service_docs} == set(expected), kind
        assert len(service_docs) == len(expected), kind
    assert set(migration_jobs(docs)) == set(expected)


# 3. Every manifest is valid Kubernetes, on the oldest supported and the newest known version.


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes(renders: Renders, value_set: str, version: str) -> None:
    checked_crds: list[str] = []
    for doc in renders[value_set]:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            checked_crds.append(doc["kind"])
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    crd = CRDS_PER_SERVICE.get(value_set)
    assert checked_crds == ([crd] * len(ALL_SERVICES) if crd else [])


@pytest.mark.parametrize(
    ("value_set", "kind", "field"),
    [("external-secrets", "ExternalSecret", "secretStoreRef"), ("tls", "Certificate", "issuerRef")],
)
def test_crd_schemas_reject_a_misspelt_field(
    renders: Renders, value_set: str, kind: str, field: str
) -> None:
    manifest = of_kind(renders[value_set], kind)[0]
    jsonschema.validate(manifest, CRD_SCHEMAS[kind])
    broken = json.loads(json.dumps(manifest))
    broken["spec"][field + "s"] = broken["spec"].pop(field)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CRD_SCHEMAS[kind])


# 4. Behaviour.


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_pod_runs_locked_down(renders: Renders, value_set: str) -> None:
    pods = workloads(renders[value_set])
    assert pods
    for workload in pods:
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"], name
        tmp = next(volume for volume in spec["volumes"] if volume["name"] == "tmp")
        assert "emptyDir" in tmp, name


@pytest.mark.parametrize("value_set", ["defaults", "minimal"])
def test_deployments_serve_their_service_with_probes(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    for service, deployment in deployments(docs).items():
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        assert container["args"] == ["serve", service]
        assert container["ports"] == [
            {"name": "https", "containerPort": SERVICES[service].default_port, "protocol": "TCP"}
        ]
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        }
        assert probes == {
            "livenessProbe": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
            "readinessProbe": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            "startupProbe": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
        }
        # uvicorn drains for up to 10 s; the pod must not be killed before that.
        assert spec["terminationGracePeriodSeconds"] > 10
        env = container_env(docs, deployment)
        assert env["CARELOOP_HTTP_HOST"] == "0.0.0.0"
        assert env["CARELOOP_HTTP_PORT"] == str(SERVICES[service].default_port)
        assert env["CARELOOP_HTTP_TLS_CERTFILE"] == "/etc/careloop/tls/tls.crt"
        assert env["CARELOOP_HTTP_TLS_KEYFILE"] == "/etc/careloop/tls/tls.key"
        assert env["CARELOOP_INTERNAL_CA_FILE"] == "/etc/careloop/tls/ca.crt"
        (tls,) = [v for v in spec["volumes"] if v["name"] == "service-tls"]
        assert tls["secret"]["secretName"] == f"careloop-{service}-tls"
        assert "optional" not in tls["secret"]
        service_doc = by_name(docs, "Service")[deployment["metadata"]["name"]]
        assert service_doc["spec"]["type"] == "ClusterIP"
        assert service_doc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_config_change_rolls_the_pods(renders: Renders) -> None:
    before = deployments(renders["defaults"])
    after = deployments(render([], {"logLevel": "DEBUG"}))
    for service, deployment in before.items():
        old = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        new = after[service]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert old != new, service


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_manifest_carries_the_standard_labels(renders: Renders, value_set: str) -> None:
    for doc in renders[value_set]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "careloop"
        assert labels["app.kubernetes.io/instance"] == "careloop"
        assert labels["app.kubernetes.io/part-of"] == "careloop"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "careloop-0.2.0"
        assert labels["app.kubernetes.io/component"]


@pytest.mark.parametrize("value_set", ["defaults", "minimal"])
def test_migration_job_per_enabled_service_runs_as_hook(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    jobs = migration_jobs(docs)
    assert set(jobs) == set(deployments(docs))
    for service, job in jobs.items():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == HOOK_DELETE_POLICY
        assert job["spec"]["backoffLimit"] >= 0
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
        assert job["spec"]["activeDeadlineSeconds"] > 0
        (container,) = pod_spec(job)["containers"]
        assert container["args"] == ["migrate", service]
        assert pod_spec(job)["restartPolicy"] == "Never"
        # The Job runs before the ConfigMap exists, yet must see the service's own settings.
        config_map = by_name(docs, "ConfigMap")[f"careloop-{service}"]
        assert container_env(docs, job) == config_map["data"]


def test_topic_job_runs_before_the_migrations(renders: Renders) -> None:
    docs = renders["defaults"]
    (topics,) = [job for job in of_kind(docs, "Job") if component(job) == "topics"]
    (container,) = pod_spec(topics)["containers"]
    assert container["args"] == ["topics", "apply"]
    annotations = topics["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == HOOK_DELETE_POLICY
    topic_weight = int(annotations["helm.sh/hook-weight"])
    for job in migration_jobs(docs).values():
        assert topic_weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    env = container_env(docs, topics)
    assert env["CARELOOP_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert env["CARELOOP_KAFKA_REPLICATION_FACTOR"] == "3"


def test_jobs_can_be_switched_off(renders: Renders) -> None:
    docs = render([], {"migrations.enabled": "false", "topics.enabled": "false"})
    assert of_kind(docs, "Job") == []
    assert not [doc for doc in of_kind(docs, "NetworkPolicy") if component(doc) == "topics"]


def test_autoscaling_replaces_the_fixed_replica_count(renders: Renders) -> None:
    ha = renders["ha"]
    hpas = {component(doc): doc for doc in of_kind(ha, "HorizontalPodAutoscaler")}
    assert set(hpas) == ALL_SERVICES
    for service, deployment in deployments(ha).items():
        assert "replicas" not in deployment["spec"], service
        hpa = hpas[service]["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    metrics = {m["resource"]["name"] for m in hpas["gateway"]["spec"]["metrics"]}
    assert metrics == {"cpu", "memory"}
    messaging_metrics = {m["resource"]["name"] for m in hpas["messaging"]["spec"]["metrics"]}
    assert messaging_metrics == {"cpu"}

    defaults = renders["defaults"]
    assert of_kind(defaults, "HorizontalPodAutoscaler") == []
    assert all(d["spec"]["replicas"] == 2 for d in deployments(defaults).values())

    one = render([], {"services.audit.autoscaling.enabled": "true"})
    assert [component(doc) for doc in of_kind(one, "HorizontalPodAutoscaler")] == ["audit"]
    assert "replicas" not in deployments(one)["audit"]["spec"]
    assert deployments(one)["gateway"]["spec"]["replicas"] == 2


def test_pod_disruption_budgets_follow_the_values(renders: Renders) -> None:
    assert of_kind(renders["defaults"], "PodDisruptionBudget") == []
    pdbs = {component(doc): doc["spec"] for doc in of_kind(renders["ha"], "PodDisruptionBudget")}
    assert set(pdbs) == ALL_SERVICES
    assert pdbs["gateway"]["minAvailable"] == 2
    assert "maxUnavailable" not in pdbs["gateway"]
    assert pdbs["messaging"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdbs["messaging"]
    selectors = {
        s: d["spec"]["selector"]["matchLabels"] for s, d in deployments(renders["ha"]).items()
    }
    for service, spec in pdbs.items():
        assert spec["selector"]["matchLabels"] == selectors[service]


def test_topology_spread_defaults_to_zone_and_host(renders: Renders) -> None:
    for service, deployment in deployments(renders["defaults"]).items():
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
                service
            )


@pytest.mark.parametrize("value_set", ["defaults", "netpol", "minimal"])
def test_network_policies_allow_only_the_architectures_paths(
    renders: Renders, value_set: str
) -> None:
    docs = renders[value_set]
    enabled = set(deployments(docs))
    by_service = policies(docs)
    assert set(by_service) == enabled

    deny = by_name(docs, "NetworkPolicy")["careloop-default-deny"]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    assert deny["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "careloop",
        "app.kubernetes.io/instance": "careloop",
    }

    for service, policy in by_service.items():
        callers = allowed_callers(policy)
        if service == "identity":
            assert callers == enabled
        elif service == "patients":
            assert callers == {"gateway", "messaging", "caregaps"} & enabled
        elif service == "gateway":
            assert callers == set()
            (rule,) = policy["spec"]["ingress"]
            assert rule["from"] == (
                [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                        }
                    }
                ]
                if value_set != "netpol"
                else [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                    }
                ]
            )
        else:
            assert callers == {"gateway"}
        for rule in policy["spec"]["ingress"]:
            assert rule["ports"] == [{"port": SERVICES[service].default_port, "protocol": "TCP"}]

        targets = egress_components(policy)
        expected_targets = {"identity"}
        if service == "gateway":
            expected_targets = enabled - {"gateway"}
        if service in ("messaging", "caregaps"):
            expected_targets |= {"patients"}
        assert set(targets) == expected_targets, service
        for target, ports in targets.items():
            assert ports == {SERVICES[target].default_port}

        dns = policy["spec"]["egress"][0]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_network_policy_peers_come_from_the_values(renders: Renders) -> None:
    docs = renders["netpol"]
    messaging = policies(docs)["messaging"]
    egress = messaging["spec"]["egress"]
    kafka = next(rule for rule in egress if rule["ports"][0]["port"] == 9093)
    assert kafka["to"][0]["podSelector"]["matchLabels"] == {"strimzi.io/kind": "Kafka"}
    postgres = next(rule for rule in egress if rule["ports"][0]["port"] == 5432)
    assert postgres["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    otel = next(rule for rule in egress if rule["ports"][0]["port"] == 4318)
    assert otel["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    external = next(rule for rule in egress if rule["ports"][0]["port"] == 443)
    assert [peer["ipBlock"]["cidr"] for peer in external["to"]] == [
        "54.172.60.0/23",
        "203.0.113.25/32",
    ]
    assert {p["port"] for p in external["ports"]} == {443, 587}
    # Referrals reaches its mail relay (outcome reports) and nothing else outside.
    relay = next(
        rule
        for rule in policies(docs)["referrals"]["spec"]["egress"]
        if rule["ports"][0]["port"] == 587
    )
    assert [peer["ipBlock"]["cidr"] for peer in relay["to"]] == ["198.51.100.7/32"]
    assert {p["port"] for p in relay["ports"]} == {587}
    # Only messaging and referrals talk to the internet.
    for service, policy in policies(docs).items():
        if service in ("messaging", "referrals"):
            continue
        for rule in policy["spec"]["egress"]:
            assert not {p["port"] for p in rule["ports"]} & {443, 587}, service

    jobs = {component(doc): doc for doc in of_kind(docs, "NetworkPolicy")}
    migrate_ports = {r["ports"][0]["port"] for r in jobs["migrate"]["spec"]["egress"]}
    assert migrate_ports == {53, 5432, 8200}
    topic_ports = {r["ports"][0]["port"] for r in jobs["topics"]["spec"]["egress"]}
    assert topic_ports == {53, 9093}
    migrate_selector = jobs["migrate"]["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert sorted(migrate_selector) == sorted(f"{s}-migrate" for s in ALL_SERVICES)


def test_otel_egress_only_when_an_endpoint_is_set(renders: Renders) -> None:
    for service, policy in policies(renders["defaults"]).items():
        ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert 4318 not in ports, service
        env = container_env(renders["defaults"], deployments(renders["defaults"])[service])
        assert "CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    netpol = renders["netpol"]
    for deployment in deployments(netpol).values():
        env = container_env(netpol, deployment)
        assert env["CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT"] == (
            "http://otel-collector.observability.svc:4318"
        )


def test_network_policies_can_be_switched_off() -> None:
    docs = render([], {"networkPolicy.enabled": "false"})
    assert of_kind(docs, "NetworkPolicy") == []


@pytest.mark.parametrize("value_set", ["defaults", "minimal"])
def test_wiring_names_the_releases_own_services(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    by_service = deployments(docs)
    enabled = set(by_service)

    url = https_url

    gateway_env = container_env(docs, by_service["gateway"])
    routes = json.loads(gateway_env["CARELOOP_ROUTES"])
    assert routes == {service: url(service) for service in enabled - {"gateway"}}
    for deployment in by_service.values():
        env = container_env(docs, deployment)
        assert env["CARELOOP_AUTH_JWKS_URL"] == f"{url('identity')}/.well-known/jwks.json"
    for service in enabled:
        assert by_name(docs, "Service")[f"careloop-{service}"]["spec"]["ports"][0]["port"] == (
            SERVICES[service].default_port
        )
    if "caregaps" in enabled:
        env = container_env(docs, by_service["caregaps"])
        assert env["CARELOOP_PATIENTS_URL"] == url("patients")
        assert env["CARELOOP_IDENTITY_TOKEN_URL"] == f"{url('identity')}/oauth/token"
    if "messaging" in enabled:
        env = container_env(docs, by_service["messaging"])
        assert env["CARELOOP_PATIENTS_URL"] == url("patients")
        assert env["CARELOOP_IDENTITY_TOKEN_URL"] == f"{url('identity')}/oauth/token"
        assert env["CARELOOP_SECURE_LINK_BASE"] == (
            "https://careloop.example.com/api/v1/messaging/links"
        )


@pytest.mark.parametrize("value_set", ["defaults", "minimal"])
def test_wiring_matches_the_shared_wiring_module(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    by_service = deployments(docs)
    urls = {service: https_url(service) for service in by_service}
    for service, deployment in by_service.items():
        env = container_env(docs, deployment)
        expected = service_urls(service, urls, "https://careloop.example.com")
        if "CARELOOP_ROUTES" in expected:
            assert json.loads(env["CARELOOP_ROUTES"]) == json.loads(expected.pop("CARELOOP_ROUTES"))
        assert {name: env[name] for name in expected} == expected
        # Secret settings arrive as files (or, for the Vault token, a token file).
        files = secret_files(deployment)
        for name in required_settings(service):
            if name == "CARELOOP_VAULT_TOKEN":
                assert "CARELOOP_VAULT_TOKEN_FILE" in env
            elif name in SECRET_SETTINGS:
                assert name.lower() in files, (service, name)
            else:
                assert name in env, (service, name)


def secret_files(deployment: dict[str, Any]) -> set[str]:
    """Files the Vault agent writes into a pod's secrets dir."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    prefix = "vault.hashicorp.com/agent-inject-secret-"
    return {key.removeprefix(prefix) for key in annotations if key.startswith(prefix)}


@pytest.mark.parametrize("value_set", ["defaults", "tls", "netpol", "external-secrets", "minimal"])
def test_service_settings_accept_the_rendered_environment(
    renders: Renders, value_set: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = renders[value_set]
    for service, deployment in deployments(docs).items():
        settings_class = SERVICES[service].settings_class()
        known = {f"CARELOOP_{field.upper()}" for field in settings_class.model_fields}
        env = container_env(docs, deployment)
        careloop_names = {name for name in env if name.startswith("CARELOOP_")}
        assert careloop_names - known == {SECRETS_DIR_VARIABLE}, service

        secrets_dir = tmp_path / service
        secrets_dir.mkdir()
        database_url = f"postgresql+asyncpg://careloop_{service}@db:5432/x?ssl=verify-full"
        (secrets_dir / "careloop_database_url").write_text(database_url)
        # Only what the chart sets: the previous service's settings must not leak in.
        for name in [name for name in os.environ if name.startswith(("CARELOOP_", "PG"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("careloop_bootstrap_token", "careloop_twilio_auth_token"):
            (secrets_dir / name).write_text(f"{service}-{name}-test-value")
        if value_set != "tls":
            # Only the tls set carries everything production messaging wants besides secrets
            # (Twilio and SMTP identifiers); the others are checked for names and types.
            monkeypatch.setenv("CARELOOP_ENVIRONMENT", "test")
        settings = settings_class(_secrets_dir=str(secrets_dir))
        assert settings.environment == ("production" if value_set == "tls" else "test")
        assert settings.http_port == SERVICES[service].default_port
        assert settings.http_host == "0.0.0.0"
        assert settings.database_url.get_secret_value() == database_url
        assert settings.vault_token_file == env["CARELOOP_VAULT_TOKEN_FILE"]
        assert settings.kafka_security_protocol == "SSL"
        assert settings.kafka_replication_factor == 3
        if service == "gateway":
            routes: dict[str, str] = getattr(settings, "routes")  # noqa: B009
            assert set(routes) == set(deployments(docs)) - {"gateway"}


def test_minimal_release_names_no_disabled_service(renders: Renders) -> None:
    docs = renders["minimal"]
    disabled = ALL_SERVICES - MINIMAL_SERVICES
    text = json.dumps(docs)
    for service in disabled:
        assert f"careloop-{service}" not in text, service
        assert f'"{service}"' not in text, service
        assert f"{service}-migrate" not in text, service


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_secret_value_anywhere(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    assert of_kind(docs, "Secret") == []
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            names = {var["name"] for var in container.get("env", [])}
            assert not names & SECRET_SETTINGS, workload["metadata"]["name"]
            assert "envFrom" not in container
            for var in container.get("env", []):
                assert "secretKeyRef" not in var.get("valueFrom", {})
    for config_map in of_kind(docs, "ConfigMap"):
        assert not set(config_map["data"]) & SECRET_SETTINGS
    for deployment in deployments(docs).values():
        env = container_env(docs, deployment)
        assert env["CARELOOP_VAULT_TOKEN_FILE"].startswith(env["CARELOOP_SECRETS_DIR"] + "/")
    text = json.dumps(docs).lower()
    assert "local-development-only" not in text
    assert "postgresql://" not in text
    assert "postgresql+asyncpg://" not in text


def test_vault_agent_injects_each_services_secrets(renders: Renders) -> None:
    docs = renders["defaults"]
    jobs = migration_jobs(docs)
    for service, deployment in deployments(docs).items():
        for workload, is_job in ((deployment, False), (jobs[service], True)):
            annotations = workload["spec"]["template"]["metadata"]["annotations"]
            assert annotations["vault.hashicorp.com/agent-inject"] == "true"
            assert annotations["vault.hashicorp.com/role"] == f"careloop-{service}"
            assert annotations["vault.hashicorp.com/agent-inject-token"] == "true"
            assert ("vault.hashicorp.com/agent-pre-populate-only" in annotations) is is_job
            prefix = "vault.hashicorp.com/agent-inject-secret-"
            files = {key.removeprefix(prefix) for key in annotations if key.startswith(prefix)}
            assert files == SECRET_FILES["all"] | SECRET_FILES.get(service, set())
            database = annotations[prefix + "careloop_database_url"]
            assert database == f"secret/data/careloop/{service}/database"
            template = annotations[
                "vault.hashicorp.com/agent-inject-template-careloop_database_url"
            ]
            assert f'secret "{database}"' in template
            assert ".Data.data.url" in template
            env = container_env(docs, workload)
            assert env["CARELOOP_VAULT_TOKEN_FILE"] == "/vault/secrets/token"
            assert env["CARELOOP_SECRETS_DIR"] == "/vault/secrets"
            spec = pod_spec(workload)
            assert spec["automountServiceAccountToken"] is True
            account = spec["serviceAccountName"]
            assert by_name(docs, "ServiceAccount")[account]["automountServiceAccountToken"] is True


@pytest.mark.parametrize("value_set", ["external-secrets", "existing-secret"])
def test_secret_modes_mount_one_secret_as_the_secrets_dir(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    external = {component(doc): doc for doc in of_kind(docs, "ExternalSecret")}
    expected_names = {
        "identity": "identity-platform-secrets",
        "messaging": "messaging-provider-secrets",
    }
    for service, deployment in deployments(docs).items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert not [key for key in annotations if key.startswith("vault.hashicorp.com/")]
        for workload in (deployment, migration_jobs(docs)[service]):
            spec = pod_spec(workload)
            assert spec["automountServiceAccountToken"] is False
            env = container_env(docs, workload)
            assert env["CARELOOP_SECRETS_DIR"] == "/var/run/secrets/careloop"
            assert env["CARELOOP_VAULT_TOKEN_FILE"] == "/var/run/secrets/careloop/vault-token"
            (volume,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
            mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "secrets")
            assert mount == {
                "name": "secrets",
                "mountPath": "/var/run/secrets/careloop",
                "readOnly": True,
            }
            secret_name = volume["secret"]["secretName"]
            if value_set == "existing-secret":
                assert secret_name == expected_names.get(service, f"careloop-{service}-secrets")
            else:
                assert secret_name == external[service]["spec"]["target"]["name"]
        if value_set == "external-secrets":
            spec = external[service]["spec"]
            assert external[service]["apiVersion"] == "external-secrets.io/v1"
            assert spec["secretStoreRef"] == {
                "kind": "ClusterSecretStore",
                "name": "careloop-vault",
            }
            assert spec["refreshInterval"] == "15m"
            keys = {item["secretKey"]: item["remoteRef"] for item in spec["data"]}
            wanted = SECRET_FILES["all"] | SECRET_FILES.get(service, set()) | {"vault-token"}
            assert set(keys) == wanted
            assert keys["careloop_database_url"] == {
                "key": f"careloop/{service}/database",
                "property": "url",
            }
            # Migration hooks mount the Secret, so it must be created before them.
            annotations = external[service]["metadata"]["annotations"]
            assert int(annotations["helm.sh/hook-weight"]) < 0
    for account in of_kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    if value_set == "existing-secret":
        assert external == {}


def test_tls_everywhere(renders: Renders) -> None:
    docs = renders["tls"]
    for workload in [*deployments(docs).values(), *migration_jobs(docs).values()]:
        env = container_env(docs, workload)
        assert env["CARELOOP_ENVIRONMENT"] == "production"
        assert env["CARELOOP_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        assert env["CARELOOP_KAFKA_SSL_CAFILE"] == "/etc/careloop/kafka-ca/ca.crt"
        assert env["CARELOOP_VAULT_ADDR"].startswith("https://")
        assert env["CARELOOP_VAULT_CA_CERT"] == "/etc/careloop/vault-ca/ca.pem"
        assert env["PGSSLMODE"] == "verify-full"
        assert env["PGSSLROOTCERT"] == "/etc/careloop/db-ca/root.crt"
        spec = pod_spec(workload)
        config_maps = {
            v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v
        }
        assert config_maps == {
            "kafka-ca": "kafka-cluster-ca",
            "vault-ca": "vault-ca",
            "db-ca": "postgres-ca",
            "internal-ca": "clinic-internal-ca-bundle",
        }
        assert env["CARELOOP_INTERNAL_CA_FILE"] == "/etc/careloop/internal-ca/trust-bundle.pem"
        service = component(workload).removesuffix("-migrate")
        (tls,) = [v for v in spec["volumes"] if v["name"] == "service-tls"]
        expected_secret = "identity-https" if service == "identity" else f"careloop-{service}-tls"
        assert tls["secret"]["secretName"] == expected_secret
        # Hooks run before cert-manager issues the certificate; only the Deployments need it.
        assert tls["secret"].get("optional", False) is (workload["kind"] == "Job")
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["kafka-ca"] == "/etc/careloop/kafka-ca"
        assert mounts["vault-ca"] == "/etc/careloop/vault-ca"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["vault.hashicorp.com/tls-secret"] == "vault-agent-tls"
    (topics,) = [job for job in of_kind(docs, "Job") if component(job) == "topics"]
    assert container_env(docs, topics)["CARELOOP_KAFKA_SSL_CAFILE"] == (
        "/etc/careloop/kafka-ca/ca.crt"
    )
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["spec"]["tls"] == [
        {"secretName": "careloop-clinic-tls", "hosts": ["careloop.clinic.test"]}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "careloop-gateway", "port": {"name": "https"}}
    certificates = {component(doc): doc["spec"] for doc in of_kind(docs, "Certificate")}
    assert set(certificates) == ALL_SERVICES
    for service, certificate in certificates.items():
        name = f"careloop-{service}"
        assert certificate["dnsNames"] == [
            name,
            f"{name}.careloop.svc",
            f"{name}.careloop.svc.cluster.local",
        ]
        assert certificate["issuerRef"]["name"] == "clinic-internal-ca"
        volumes = pod_spec(deployments(docs)[service])["volumes"]
        (tls,) = [v for v in volumes if v["name"] == "service-tls"]
        assert certificate["secretName"] == tls["secret"]["secretName"]
    messaging = container_env(docs, deployments(docs)["messaging"])
    assert messaging["CARELOOP_SECURE_LINK_BASE"] == (
        "https://careloop.clinic.test/api/v1/messaging/links"
    )


def test_defaults_are_production_and_tls(renders: Renders) -> None:
    docs = renders["defaults"]
    for deployment in deployments(docs).values():
        env = container_env(docs, deployment)
        assert env["CARELOOP_ENVIRONMENT"] == "production"
        assert env["CARELOOP_KAFKA_SECURITY_PROTOCOL"] in {"SSL", "SASL_SSL"}
        assert env["CARELOOP_VAULT_ADDR"] == "https://vault.vault.svc:8200"
        assert env["CARELOOP_KAFKA_REPLICATION_FACTOR"] == "3"
        assert env["PGSSLMODE"] == "verify-full"
        image = pod_spec(deployment)["containers"][0]["image"]
        assert image == "ghcr.io/careloop/careloop:0.1.0"
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["spec"]["tls"]


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        ({"services.gateway.replica": "3"}, "replica"),
        ({"services.patients.env.CARELOOP_DATABASE_URL": "x"}, "CARELOOP_DATABASE_URL"),
        ({"services.identity.env.CARELOOP_BOOTSTRAP_TOKEN": "x"}, "CARELOOP_BOOTSTRAP_TOKEN"),
        ({"vault.secrets.mode": "inline"}, "mode"),
        ({"kafka.securityProtocol": "SASL_PLAINTEXT"}, "securityProtocol"),
        ({"services.messaging.enabled": "true", "services.patients.enabled": "false"}, "patients"),
        (
            {
                "services.messaging.enabled": "false",
                "services.caregaps.enabled": "true",
                "services.patients.enabled": "false",
            },
            "caregaps reads demographics from patients",
        ),
        ({"services.identity.enabled": "false"}, "identity"),
        ({"publicUrl": "http://careloop.example.com"}, "publicUrl"),
        ({"kafka.securityProtocol": "PLAINTEXT"}, "kafka.securityProtocol"),
        ({"vault.addr": "http://vault:8200"}, "vault.addr"),
        ({"serviceTls.enabled": "false"}, "serviceTls.enabled"),
        ({"serviceTls.secrets.billing": "x"}, "billing"),
    ],
)
def test_values_that_cannot_work_are_refused(set_values: dict[str, str], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render([], set_values)


def test_plaintext_is_allowed_outside_production() -> None:
    docs = render(
        [],
        {
            "environment": "development",
            "kafka.securityProtocol": "PLAINTEXT",
            "vault.addr": "http://vault:8200",
            "publicUrl": "http://localhost:8100",
            "serviceTls.enabled": "false",
        },
    )
    env = container_env(docs, deployments(docs)["messaging"])
    assert env["CARELOOP_ENVIRONMENT"] == "development"
    assert env["CARELOOP_PATIENTS_URL"] == "http://careloop-patients:8101"
    assert "CARELOOP_HTTP_TLS_CERTFILE" not in env
    probe = pod_spec(deployments(docs)["messaging"])["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["scheme"] == "HTTP"
    assert not [
        v for v in pod_spec(deployments(docs)["messaging"])["volumes"] if v["name"] == "service-tls"
    ]
    assert env["CARELOOP_SECURE_LINK_BASE"] == "http://localhost:8100/api/v1/messaging/links"
