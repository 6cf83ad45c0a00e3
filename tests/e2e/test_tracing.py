"""One trace follows a request from the patients API through Kafka into the audit consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the services install the SDK tracer provider"
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


async def test_trace_context_rides_from_http_through_kafka_to_the_consumer(
    slice_apps: Any, spans: InMemorySpanExporter
) -> None:
    headers = {**slice_apps.org, "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    response = await slice_apps.patients.post(
        "/patients",
        json={"name": {"family": "Synthetic", "given": ["Trace"]}, "birth_date": "1990-01-01"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    await slice_apps.wait_for_trail(response.json()["id"], expected=1)

    def consumer_spans() -> list[Any]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.name == "consume careloop.audit.access.recorded.v1"
            and format(s.context.trace_id, "032x") == TRACE_ID
        ]

    for _ in range(50):
        if consumer_spans():
            break
        await asyncio.sleep(0.1)
    server = [s for s in spans.get_finished_spans() if s.name == "POST /patients"]
    assert [format(s.context.trace_id, "032x") for s in server] == [TRACE_ID]
    assert consumer_spans(), "the audit consumer's span should continue the request's trace"
    assert consumer_spans()[0].kind is trace.SpanKind.CONSUMER
    assert response.headers["x-request-id"]
