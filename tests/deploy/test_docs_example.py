"""The values file in docs/operations/deploy.md renders and lints: an operator copying it
starts from something the chart accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helmchart import by_name, lint, render

pytestmark = pytest.mark.deploy

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations" / "deploy.md"


def example_values(tmp_path: Path) -> Path:
    text = DEPLOY_DOC.read_text()
    (block,) = re.findall(r"```yaml\n(# careloop-values\.yaml.*?)```", text, flags=re.S)
    path = tmp_path / "careloop-values.yaml"
    # The elided identifiers (AC…, MG…) stand for the operator's own.
    path.write_text(block.replace("…", "0" * 32))
    return path


def test_the_documented_values_render_and_lint(tmp_path: Path) -> None:
    values = example_values(tmp_path)
    lint([values])
    docs = render([values])
    config = by_name(docs, "ConfigMap")["careloop-messaging"]["data"]
    assert config["CARELOOP_SECURE_LINK_BASE"] == (
        "https://care.example-group.org/api/v1/messaging/links"
    )
    assert len([d for d in docs if d["kind"] == "Certificate"]) == 9
    assert "careloop-scheduling" in by_name(docs, "HorizontalPodAutoscaler")
