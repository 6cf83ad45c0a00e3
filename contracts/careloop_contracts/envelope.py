"""The CloudEvents 1.0 envelope, carried as Kafka headers (binary content mode).

The record value is the event's JSON; everything about the event (id, type, source,
time, subject, tenant, tracing) travels in headers, so brokers, tools and the
dead-letter inspector can route and filter without parsing the payload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from careloop_contracts.base import EVENT_TYPE_PATTERN, UtcDatetime

if TYPE_CHECKING:
    from careloop_contracts.base import Event

PLATFORM_ORG_ID = "platform"
"""``org_id`` of platform-level events that belong to no tenant (e.g. audit checkpoints)."""

TRACEPARENT_PATTERN = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

# Envelope attribute -> Kafka header name. CloudEvents extension attribute names are
# lowercase alphanumerics, hence ``ce_orgid`` for ``org_id``. ``traceparent`` uses the
# plain W3C header so OpenTelemetry's Kafka propagators pick it up unchanged.
HEADER_NAMES: dict[str, str] = {
    "specversion": "ce_specversion",
    "id": "ce_id",
    "type": "ce_type",
    "source": "ce_source",
    "time": "ce_time",
    "subject": "ce_subject",
    "datacontenttype": "content-type",
    "org_id": "ce_orgid",
    "location_id": "ce_locationid",
    "correlation_id": "ce_correlationid",
    "causation_id": "ce_causationid",
    "traceparent": "traceparent",
}
REQUIRED_HEADERS: tuple[str, ...] = (
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_orgid",
)
CONTENT_TYPE: Final = "application/json"


class EnvelopeError(ValueError):
    """Kafka headers do not form a valid Careloop CloudEvents envelope."""


class Envelope(BaseModel):
    """CloudEvents attributes of one event record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid4()), min_length=1)
    type: str
    source: str = Field(min_length=1, description="URI reference, e.g. /careloop/patients")
    time: UtcDatetime
    subject: str | None = Field(default=None, description="The record key: the patient id")
    org_id: str = Field(min_length=1)
    location_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    datacontenttype: Literal["application/json"] = CONTENT_TYPE
    specversion: Literal["1.0"] = "1.0"

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if not EVENT_TYPE_PATTERN.fullmatch(value):
            raise ValueError("must look like careloop.<service>.<entity>.<verb>.v<N>")
        return value

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str | None) -> str | None:
        if value is not None and not TRACEPARENT_PATTERN.fullmatch(value):
            raise ValueError("must be a W3C traceparent (version-traceid-parentid-flags)")
        return value

    @classmethod
    def for_event(
        cls,
        event: Event,
        *,
        source: str,
        time: datetime,
        org_id: str | None = None,
        location_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        """An envelope for ``event``: type from the class, subject from its record key,
        org and location from the event's own fields unless given."""
        org = org_id if org_id is not None else getattr(event, "org_id", None)
        if org is None:
            raise ValueError(f"{event.event_type} carries no org_id; pass org_id=")
        location = location_id if location_id is not None else getattr(event, "location_id", None)
        return cls(
            type=event.event_type,
            source=source,
            time=time,
            subject=event.partition_key() if event.key_fields else None,
            org_id=org,
            location_id=location,
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=traceparent,
        )


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` suffix."""
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_headers(env: Envelope) -> list[tuple[str, bytes]]:
    """Kafka headers for ``env``; attributes that are ``None`` are omitted."""
    headers: list[tuple[str, bytes]] = []
    for attribute, header in HEADER_NAMES.items():
        value = getattr(env, attribute)
        if value is None:
            continue
        text = format_time(value) if isinstance(value, datetime) else str(value)
        headers.append((header, text.encode()))
    return headers


def _header_text(name: str, raw: bytes | bytearray | memoryview | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"header {name!r} is not valid UTF-8") from exc


def from_headers(headers: Sequence[tuple[str, bytes]]) -> Envelope:
    """Read the envelope from Kafka headers; unknown headers are ignored.

    Raises ``EnvelopeError`` naming the missing or invalid header. A malformed
    ``traceparent`` is dropped rather than rejected: W3C trace context says to start
    a new trace, and tracing must never make an event undeliverable.
    """
    known = {header: attribute for attribute, header in HEADER_NAMES.items()}
    values: dict[str, str] = {}
    for name, raw in headers:
        header = name.lower()
        if header not in known:
            continue
        text = _header_text(name, raw)
        if header in values and values[header] != text:
            raise EnvelopeError(f"header {header!r} appears twice with different values")
        values[header] = text

    missing = [header for header in REQUIRED_HEADERS if not values.get(header)]
    if missing:
        raise EnvelopeError(f"missing required CloudEvents header(s): {', '.join(missing)}")
    if values["ce_specversion"] != "1.0":
        raise EnvelopeError(
            f"header 'ce_specversion' is {values['ce_specversion']!r}; only '1.0' is supported"
        )
    content_type = values.pop("content-type", CONTENT_TYPE)
    if content_type.split(";", 1)[0].strip().lower() != CONTENT_TYPE:
        raise EnvelopeError(
            f"header 'content-type' is {content_type!r}; events are {CONTENT_TYPE!r}"
        )
    traceparent = values.get("traceparent")
    if traceparent is not None and not TRACEPARENT_PATTERN.fullmatch(traceparent):
        del values["traceparent"]

    fields: dict[str, str] = {known[h]: v for h, v in values.items() if v != ""}
    try:
        return Envelope.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"header {HEADER_NAMES.get(str(err['loc'][0]), err['loc'][0])!r}: {err['msg']}"
            for err in exc.errors()
        )
        raise EnvelopeError(f"invalid CloudEvents headers: {problems}") from exc
