"""`make run`, docker-compose and the Helm chart run the same platform: the same services
on the same ports, the same topic catalogue, and only setting names the services know.

Each deployment describes the platform in its own terms (local ports, compose service
names, Kubernetes Services); `careloop_cli.wiring` and the registry are what they are
held to, so adding a service or a setting that one of them forgets fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from careloop_cli.devstack import service_environment
from careloop_cli.registry import SERVICES
from careloop_cli.wiring import (
    SECRET_SETTINGS,
    SECRETS_DIR_VARIABLE,
    required_settings,
    service_urls,
)
from careloop_contracts import topic_catalogue

from .conftest import Renders
from .helmchart import VALUE_SETS, by_name, of_kind, pod_spec

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
CHART = REPO / "helm" / "careloop"

# Read by the `careloop` command itself, not by a service's settings.
COMMAND_VARIABLES = {SECRETS_DIR_VARIABLE, "CARELOOP_VAULT_ROOT_TOKEN"}
# A setting may be given as a file instead: the token a Vault agent keeps fresh.
FILE_FORMS = {"CARELOOP_VAULT_TOKEN": "CARELOOP_VAULT_TOKEN_FILE"}
VAULT_AGENT_FILE = "vault.hashicorp.com/agent-inject-secret-"
# Files of the secrets directory that hold the Vault token (CARELOOP_VAULT_TOKEN_FILE),
# not a setting.
TOKEN_FILES = {"token", "vault-token"}


def setting_names(service: str) -> set[str]:
    settings = SERVICES[service].settings_class()
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def careloop_variables(env: dict[str, Any]) -> set[str]:
    return {name for name in env if name.startswith("CARELOOP_")}


def unknown_names(service: str, names: set[str]) -> set[str]:
    return names - setting_names(service) - COMMAND_VARIABLES


def missing_settings(service: str, given: set[str], secret_files: set[str]) -> list[str]:
    """Required settings given neither as a variable, nor in their file form, nor as a file
    in the secrets directory."""
    missing = []
    for name in required_settings(service):
        if name in given or FILE_FORMS.get(name) in given:
            continue
        if SECRETS_DIR_VARIABLE in given and name.lower() in secret_files:
            continue
        missing.append(name)
    return missing


# --- make run -------------------------------------------------------------------------


def make_run_environment(service: str) -> dict[str, str]:
    ports = {name: entry.default_port for name, entry in SERVICES.items()}
    env = service_environment(
        SERVICES[service],
        port=ports[service],
        ports=ports,
        database_url="postgresql+asyncpg://careloop_x:pw@127.0.0.1/careloop_x",
        kafka_bootstrap="127.0.0.1:9092",
        vault_addr="http://127.0.0.1:8200",
        vault_token="token",
    )
    if service == "identity":
        env["CARELOOP_BOOTSTRAP_TOKEN"] = "bootstrap"  # added by DevStack.prepare_service
    return env


@pytest.mark.parametrize("service", list(SERVICES))
def test_make_run_gives_every_required_setting_and_only_known_names(service: str) -> None:
    env = make_run_environment(service)
    assert missing_settings(service, set(env), set()) == []
    assert unknown_names(service, careloop_variables(env)) == set()
    assert env["CARELOOP_HTTP_PORT"] == str(SERVICES[service].default_port)


# --- compose --------------------------------------------------------------------------


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else list(command)


def compose_services() -> dict[str, dict[str, Any]]:
    """Compose services that run a Careloop service, by that service's name."""
    found = {}
    for definition in COMPOSE.values():
        command = compose_command(definition)
        if command[:1] == ["serve"]:
            found[command[1]] = definition
    return found


def test_compose_runs_every_service_once() -> None:
    assert sorted(compose_services()) == sorted(SERVICES)


@pytest.mark.parametrize("service", list(SERVICES))
def test_compose_gives_every_required_setting_and_only_known_names(service: str) -> None:
    env = compose_services()[service]["environment"]
    assert isinstance(env, dict), "compose environment must be a mapping"
    assert missing_settings(service, set(env), set()) == []
    assert unknown_names(service, careloop_variables(env)) == set()
    assert str(env["CARELOOP_HTTP_PORT"]) == str(SERVICES[service].default_port)


@pytest.mark.parametrize("service", list(SERVICES))
def test_compose_wires_services_as_the_wiring_module_does(service: str) -> None:
    urls = {name: f"http://{name}:{entry.default_port}" for name, entry in SERVICES.items()}
    expected = service_urls(service, urls, public_url="http://localhost:8100")
    env = compose_services()[service]["environment"]
    given = {name: env.get(name) for name in expected}
    if "CARELOOP_ROUTES" in expected:
        given["CARELOOP_ROUTES"] = json.loads(str(env["CARELOOP_ROUTES"]))
        expected["CARELOOP_ROUTES"] = json.loads(expected["CARELOOP_ROUTES"])
    assert given == expected


@pytest.mark.parametrize("service", list(SERVICES))
def test_compose_migrates_every_service_with_its_own_database(service: str) -> None:
    migrations = [d for d in COMPOSE.values() if compose_command(d) == ["migrate", service]]
    assert len(migrations) == 1
    runs = compose_services()[service]["environment"]["CARELOOP_DATABASE_URL"]
    assert migrations[0]["environment"]["CARELOOP_DATABASE_URL"] == runs
    assert f"/careloop_{service}" in runs


# --- Helm -----------------------------------------------------------------------------


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The chart's Deployments by the service each one serves (`careloop serve <name>`)."""
    found = {}
    for doc in of_kind(docs, "Deployment"):
        args = pod_spec(doc)["containers"][0].get("args", [])
        assert args[:1] == ["serve"], doc["metadata"]["name"]
        found[args[1]] = doc
    return found


def workload_variables(docs: list[dict[str, Any]], workload: dict[str, Any]) -> set[str]:
    """Names a workload's first container gets: env entries and whole ConfigMaps."""
    container = pod_spec(workload)["containers"][0]
    names = {var["name"] for var in container.get("env", [])}
    config_maps = by_name(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            pytest.fail(f"envFrom other than a ConfigMap: {source}")
    return names


def secret_files(docs: list[dict[str, Any]], service: str, workload: dict[str, Any]) -> set[str]:
    """Files the pod's secrets directory holds: Vault agent secrets, or the keys of the
    Secret an ExternalSecret or an existing Secret provides."""
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    files = {
        key.removeprefix(VAULT_AGENT_FILE)
        for key in annotations
        if key.startswith(VAULT_AGENT_FILE)
    }
    volumes = pod_spec(workload).get("volumes", [])
    mounted = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    for external in of_kind(docs, "ExternalSecret"):
        if external["spec"]["target"]["name"] in mounted:
            files |= {entry["secretKey"] for entry in external["spec"]["data"]}
    if any(name.endswith("-secrets") for name in mounted) and not of_kind(docs, "ExternalSecret"):
        # An operator's own Secret (existing-secret mode): its keys are documented, not
        # rendered, so the secret settings count as given there.
        files |= {name.lower() for name in SECRET_SETTINGS & setting_names(service)}
    return files - TOKEN_FILES


@pytest.mark.parametrize("value_set", [name for name in VALUE_SETS if name != "minimal"])
def test_helm_runs_every_service_on_its_port(renders: Renders, value_set: str) -> None:
    docs = renders[value_set]
    found = deployments(docs)
    assert sorted(found) == sorted(SERVICES)
    services = by_name(docs, "Service")
    for name, deployment in found.items():
        ports = {
            p.get("name", p["containerPort"]): p["containerPort"]
            for p in pod_spec(deployment)["containers"][0]["ports"]
        }
        assert SERVICES[name].default_port in ports.values(), name
        # A Service of the release sends its port to that container port.
        targets = [
            port.get("targetPort")
            for svc in services.values()
            if svc["spec"]["selector"].get("app.kubernetes.io/component") == name
            for port in svc["spec"]["ports"]
        ]
        assert SERVICES[name].default_port in [ports.get(t, t) for t in targets], name


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_gives_every_required_setting_and_only_known_names(
    renders: Renders, value_set: str
) -> None:
    docs = renders[value_set]
    for service, deployment in deployments(docs).items():
        names = workload_variables(docs, deployment)
        files = secret_files(docs, service, deployment)
        assert missing_settings(service, names, files) == [], (value_set, service)
        assert unknown_names(service, careloop_variables(dict.fromkeys(names))) == set(), (
            value_set,
            service,
        )
        # Files in the secrets directory are settings too: their names must be known.
        assert {f.upper() for f in files} - setting_names(service) == set(), (value_set, service)


def test_helm_migrates_every_enabled_service(renders: Renders) -> None:
    docs = renders["defaults"]
    migrated = sorted(
        pod_spec(job)["containers"][0]["args"][1]
        for job in of_kind(docs, "Job")
        if pod_spec(job)["containers"][0].get("args", [])[:1] == ["migrate"]
    )
    assert migrated == sorted(SERVICES)


# --- topics ---------------------------------------------------------------------------

TOPIC_LITERAL = re.compile(r"careloop\.(dlq\.|patients|scheduling|messaging|identity|audit)")


def test_every_deployment_creates_topics_from_the_one_catalogue(renders: Renders) -> None:
    # compose and Helm run the catalogue's own command ...
    assert [d for d in COMPOSE.values() if compose_command(d) == ["topics", "apply"]]
    jobs = of_kind(renders["defaults"], "Job")
    assert [j for j in jobs if pod_spec(j)["containers"][0].get("args") == ["topics", "apply"]]
    # ... and `make run` calls the same function (checked by the dev stack's e2e test,
    # which finds every catalogue topic on its broker).
    import careloop_cli.devstack as devstack

    assert devstack.apply_topic_catalogue.__module__ == "careloop_kit.bus.kafka"
    # Nobody keeps a second list: no topic name is written into compose or the chart.
    for path in [REPO / "docker-compose.yml", *sorted(CHART.rglob("*"))]:
        if path.is_file():
            found = TOPIC_LITERAL.findall(path.read_text())
            assert not found, f"{path} names topics itself; use the catalogue"
    assert len(topic_catalogue()) > 0
