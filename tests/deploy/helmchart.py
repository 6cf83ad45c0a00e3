"""Render and lint the Helm chart with the pinned helm binary (`make helm`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".tools" / "bin" / "helm"
CHART = REPO / "helm" / "careloop"
VALUES = Path(__file__).resolve().parent / "values"
RELEASE = "careloop"
NAMESPACE = "careloop"
# Every call renders for the oldest Kubernetes the chart supports (its kubeVersion), so a
# template that needs a newer API fails here; `make helm` stamps 1.37 in as the default.
KUBE_VERSION = "1.29.0"

# The value sets the chart is checked under; `defaults` is values.yaml alone.
VALUE_SETS: dict[str, list[Path]] = {
    "defaults": [],
    "ha": [VALUES / "ha.yaml"],
    "tls": [VALUES / "tls.yaml"],
    "netpol": [VALUES / "netpol.yaml"],
    "external-secrets": [VALUES / "external-secrets.yaml"],
    "existing-secret": [VALUES / "existing-secret.yaml"],
    "minimal": [VALUES / "minimal.yaml"],
}


class HelmMissingError(RuntimeError):
    """The pinned helm binary is not installed."""


class HelmError(RuntimeError):
    """helm exited with an error; the message carries its output."""


def _helm() -> Path:
    if not HELM.is_file():
        raise HelmMissingError(f"{HELM} not found: run `make helm` to build helm")
    return HELM


def _run(args: list[str]) -> str:
    result = subprocess.run(
        [str(_helm()), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _value_args(values_files: list[Path], set_values: dict[str, str] | None) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render(
    values_files: list[Path], set_values: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every manifest `helm template` renders for these values, parsed, empty documents dropped."""
    output = _run(
        [
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *_value_args(values_files, set_values),
        ]
    )
    return [doc for doc in yaml.safe_load_all(output) if doc]


def lint(values_files: list[Path], set_values: dict[str, str] | None = None) -> str:
    """Run `helm lint --strict` on the chart; raises HelmError when it fails."""
    return _run(
        [
            "lint",
            "--strict",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *_value_args(values_files, set_values),
        ]
    )


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered manifests of one kind."""
    return [doc for doc in docs if doc.get("kind") == kind]


def by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The rendered manifests of one kind, keyed by metadata.name."""
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, kind)}


def component(doc: dict[str, Any]) -> str:
    """The app.kubernetes.io/component label of a manifest."""
    labels: dict[str, str] = doc["metadata"].get("labels", {})
    return labels["app.kubernetes.io/component"]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or Job."""
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def container_env(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The first container's env as name -> value, resolving ConfigMap references."""
    config_maps = by_name(docs, "ConfigMap")
    env: dict[str, str] = {}
    for var in pod_spec(workload)["containers"][0].get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["configMapKeyRef"]
        env[var["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
    return env
