"""Traces follow the logging policy: a query string never leaves the process in a span."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from careloop_kit.telemetry import RedactingSpanProcessor, redact, redact_query

pytestmark = pytest.mark.unit

PHONE = "5550109999"


def traced_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_query_values_are_blanked_and_keys_kept() -> None:
    assert redact_query(f"phone={PHONE}&birth_date=1990-05-06") == (
        "phone=[redacted]&birth_date=[redacted]"
    )
    assert redact_query("&&") == "[redacted]"


def test_a_span_started_with_a_query_or_url_is_exported_without_it() -> None:
    provider, exporter = traced_provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /patients",
        attributes={
            "url.query": f"phone={PHONE}",
            "url.full": f"http://patients:8101/patients?phone={PHONE}",
            "url.path": "/patients",
        },
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["url.query"] == "phone=[redacted]"
    assert span.attributes["url.full"] == "http://patients:8101/patients?[redacted]"
    assert span.attributes["url.path"] == "/patients"


async def test_fastapi_server_spans_carry_no_query_values() -> None:
    provider, exporter = traced_provider()
    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.get("/patients")
    async def search(phone: str) -> dict[str, int]:
        return {"found": len(phone)}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/patients", params={"phone": PHONE})).status_code == 200

    spans = exporter.get_finished_spans()
    assert spans, "FastAPI's telemetry records a server span"
    exported = repr([dict(span.attributes or {}) for span in spans]) + repr(
        [span.name for span in spans]
    )
    assert PHONE not in exported
    assert any((s.attributes or {}).get("url.query") == "phone=[redacted]" for s in spans)


def test_redact_still_strips_queries_from_log_text() -> None:
    assert PHONE not in redact(f"GET http://gateway/api/v1/patients/patients?phone={PHONE}")
