"""OpenTelemetry tracing and structured JSON logs carrying trace ids, under one logging policy.

Logging policy (every service and `careloop serve` get it from `setup_telemetry`): logs
never hold PHI or credentials, so no query string, request or response body, or
credential-bearing header reaches a log line.

1. Libraries that log URLs, request lines, headers or statements are capped at WARNING,
   whatever `log_level` says (`QUIET_LIBRARIES`): `httpx` and `httpcore` log every
   request with its query string at INFO, `uvicorn.access` every request target,
   `urllib3` (under hvac) every Vault path, `sqlalchemy.engine` statements with their
   parameters, `aiokafka` and `faststream` message metadata, `aiosmtplib` the SMTP
   conversation (recipients).
2. A second wall on the root handler, `RedactingFilter`, rewrites every record before it
   is formatted: the query of any URL or request target becomes `?[redacted]`, the
   password of a URL's user info `[redacted]`, and the values of credential headers
   (`CREDENTIAL_HEADERS`), `Bearer`/`Basic` credentials, JWT-shaped strings and Vault
   tokens `[redacted]`, in the message, its arguments, the exception and stack text
   and string extras. A record logged by a library the cap does not name is caught.
3. Our own log calls name ids, counts and states, never request bodies or PHI values;
   an exception whose text embeds a URL is logged through the same filter.
4. APIs take PHI in request bodies, never in URLs (`POST /patients/_search`, as FHIR
   does), so neither the gateway's nor any proxy's request line carries it.
5. Traces follow the same policy: `RedactingSpanProcessor` runs first on every span of
   the tracer provider installed here and blanks the values of a server span's query
   (`url.query`, recorded by FastAPI's telemetry) and the query of any URL attribute,
   before an exporter sees the span.

Loggers with their own handlers that do not propagate (uvicorn's default log config,
used by `serve_in_task` in tests at WARNING) bypass the root handler; `careloop serve`
runs uvicorn with `log_config=None`, so its loggers propagate to it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, Any
from urllib.parse import parse_qsl

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.json import JsonFormatter

QUIET_LIBRARIES = (
    "httpx",
    "httpcore",
    "uvicorn.access",
    "urllib3",
    "hvac",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "aiokafka",
    "faststream",
    "aiosmtplib",
)
"""Loggers that write URLs, headers or payloads below WARNING: capped at WARNING."""

CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-twilio-signature",
    "x-api-key",
    "api-key",
    "x-vault-token",
    "x-bootstrap-token",
    "webhook-signature",
)
"""Headers whose values are credentials: redacted wherever a log line names them."""

REDACTED = "[redacted]"

# A URL (scheme://...) or a request target (/path) followed by a query: the query goes.
_QUERY = re.compile(r"(?P<target>(?:\b[A-Za-z][A-Za-z0-9+.-]*://|/)[^\s?#'\"<>]*)\?[^\s#'\"<>]+")
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"<>]+):[^\s/@'\"<>]+@")
_HEADER = re.compile(
    r"(?P<head>[\"']?\b(?:"
    + "|".join(re.escape(name) for name in CREDENTIAL_HEADERS)
    + r")\b[\"']?\s*[:=,]\s*(?:b?[\"'])?)[^\"'\r\n]+",
    re.IGNORECASE,
)
_SCHEME_CREDENTIAL = re.compile(
    r"\b(?P<head>(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_VAULT_TOKEN = re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{16,}")

# Attributes every LogRecord has; anything else was passed as `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "service",
    "trace_id",
    "span_id",
}

_configured = False


def redact(text: str) -> str:
    """`text` without query strings, URL passwords or credential values."""
    text = _QUERY.sub(rf"\g<target>?{REDACTED}", text)
    text = _USERINFO.sub(rf"\g<head>:{REDACTED}@", text)
    text = _HEADER.sub(rf"\g<head>{REDACTED}", text)
    text = _SCHEME_CREDENTIAL.sub(rf"\g<head>{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _VAULT_TOKEN.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """The second wall of the logging policy: rewrites a record with `redact` before any
    handler formats it (the record is shared, so later handlers see the redacted one)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string is the handler's to report, unredacted args and all
            # left out: drop them rather than print them raw.
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


URL_SPAN_ATTRIBUTES = ("url.full", "http.url", "http.target")
"""Span attributes that hold a whole URL or request target: their query is redacted."""


def redact_query(query: str) -> str:
    """A query string with every value blanked, keys kept for debugging."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{key}={REDACTED}" for key, _ in pairs) if pairs else REDACTED


class RedactingSpanProcessor(SpanProcessor):
    """Blanks query values on spans as they start, so no exporter ever holds them."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        query = attributes.get("url.query")
        if isinstance(query, str) and query:
            span.set_attribute("url.query", redact_query(query))
        for name in URL_SPAN_ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, str):
                span.set_attribute(name, redact(value))


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


def log_handler(
    service: str, *, json_logs: bool = True, stream: IO[str] | None = None
) -> logging.Handler:
    """The production log handler: redaction, trace ids and the JSON (or text) format,
    writing to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter
    if json_logs:
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s %(span_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    handler.addFilter(_TraceIdFilter(service))
    return handler


def _writes_to_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and stream in (
        sys.stderr,
        sys.stdout,
        sys.__stderr__,
        sys.__stdout__,
    )


def quiet_libraries(level: int) -> None:
    """Cap the loggers of `QUIET_LIBRARIES` at WARNING (or `level`, when stricter)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))


def setup_telemetry(
    service: str,
    *,
    level: str = "INFO",
    json_logs: bool = True,
    otlp_endpoint: str | None = None,
) -> None:
    """Install the tracer provider and the logging policy once per process.

    With `otlp_endpoint`, spans are exported in batches over OTLP/HTTP to a collector;
    the exporter drops spans rather than block a request when the collector is down.
    Root handlers that write to this process' stderr or stdout are replaced (one line per
    record); others attached to the root logger (a file, a test's log capture) are kept.
    """
    global _configured
    if _configured:
        return
    _configured = True
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": f"careloop-{service}"}))
        provider.add_span_processor(RedactingSpanProcessor())
        if otlp_endpoint:
            provider.add_span_processor(BatchSpanProcessor(otlp_exporter(otlp_endpoint)))
        trace.set_tracer_provider(provider)
    handler = log_handler(service, json_logs=json_logs)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not _writes_to_console(h)]
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries(root.level)


def span_attributes(**attributes: Any) -> dict[str, Any]:
    """Drop empty values: spans must never carry PHI, only ids."""
    return {k: v for k, v in attributes.items() if v is not None}


def otlp_exporter(endpoint: str) -> Any:
    """An OTLP/HTTP span exporter for a collector's base URL (`.../v1/traces` is added)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
