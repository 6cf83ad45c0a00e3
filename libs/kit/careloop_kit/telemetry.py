"""OpenTelemetry tracing and structured JSON logs carrying trace ids."""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.json import JsonFormatter

_configured = False


class _TraceIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.service = self._service
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        return True


def setup_telemetry(
    service: str,
    *,
    level: str = "INFO",
    json_logs: bool = True,
    otlp_endpoint: str | None = None,
) -> None:
    """Install the tracer provider and log format once per process.

    With `otlp_endpoint`, spans are exported in batches over OTLP/HTTP to a collector;
    the exporter drops spans rather than block a request when the collector is down.
    """
    global _configured
    if _configured:
        return
    _configured = True
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": f"careloop-{service}"}))
        if otlp_endpoint:
            provider.add_span_processor(BatchSpanProcessor(otlp_exporter(otlp_endpoint)))
        trace.set_tracer_provider(provider)
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if json_logs:
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s %(span_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(_TraceIdFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


def span_attributes(**attributes: Any) -> dict[str, Any]:
    """Drop empty values: spans must never carry PHI, only ids."""
    return {k: v for k, v in attributes.items() if v is not None}


def otlp_exporter(endpoint: str) -> Any:
    """An OTLP/HTTP span exporter for a collector's base URL (`.../v1/traces` is added)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
