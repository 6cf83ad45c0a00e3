"""The compose collector takes the services' metrics: an OTLP metrics pipeline into a
Prometheus endpoint on the compose network, which the services' OTLP endpoint reaches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "compose" / "otel-collector" / "config.yaml"


@pytest.fixture
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_metrics_flow_from_the_otlp_receiver_to_a_prometheus_endpoint(
    config: dict[str, Any],
) -> None:
    metrics = config["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    assert "prometheus" in metrics["exporters"]
    # Every exporter and processor a pipeline names is declared.
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline.get("processors", [])) <= set(config["processors"])
    # The memory limiter comes first, or it cannot push back on a burst.
    assert metrics["processors"][0] == "memory_limiter"
    assert config["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"


def test_the_services_export_to_the_receiver_the_collector_listens_on(
    config: dict[str, Any],
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounted = compose["services"]["otel-collector"]["volumes"]
    assert any(v.startswith("./deploy/compose/otel-collector/config.yaml:") for v in mounted)
    listen = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    port = listen.rsplit(":", 1)[1]
    endpoints = {
        service["environment"]["CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT"]
        for service in compose["services"].values()
        if "CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT" in service.get("environment", {})
    }
    assert endpoints == {f"http://otel-collector:{port}"}
