"""The CloudEvents envelope survives a trip through Kafka headers, and bad headers fail
with a message that names the header."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from careloop_contracts import (
    Envelope,
    EnvelopeError,
    PatientRegistered,
    from_headers,
    to_headers,
)

pytestmark = pytest.mark.unit

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def full_envelope() -> Envelope:
    return Envelope(
        type="careloop.patients.patient.registered.v1",
        source="/careloop/patients",
        time=datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        subject="pat-1",
        org_id="org-1",
        location_id="loc-1",
        correlation_id="corr-1",
        causation_id="cause-1",
        traceparent=TRACEPARENT,
    )


def test_round_trip_with_every_attribute() -> None:
    env = full_envelope()
    headers = to_headers(env)
    assert dict(headers) == {
        "ce_specversion": b"1.0",
        "ce_id": env.id.encode(),
        "ce_type": b"careloop.patients.patient.registered.v1",
        "ce_source": b"/careloop/patients",
        "ce_time": b"2025-03-04T05:06:07.891011Z",
        "ce_subject": b"pat-1",
        "content-type": b"application/json",
        "ce_orgid": b"org-1",
        "ce_locationid": b"loc-1",
        "ce_correlationid": b"corr-1",
        "ce_causationid": b"cause-1",
        "traceparent": TRACEPARENT.encode(),
    }
    assert from_headers(headers) == env


def test_none_attributes_are_omitted_and_come_back_as_none() -> None:
    env = Envelope(
        type="careloop.audit.checkpoint.signed.v1",
        source="/careloop/audit",
        time=datetime(2025, 1, 1, tzinfo=UTC),
        org_id="platform",
    )
    headers = to_headers(env)
    names = [name for name, _ in headers]
    assert "ce_subject" not in names
    assert "traceparent" not in names
    assert from_headers(headers) == env


def test_ids_are_unique_uuid4_by_default() -> None:
    assert full_envelope().id != full_envelope().id


def test_time_is_normalised_to_utc_and_naive_time_is_rejected() -> None:
    plus_two = timezone(timedelta(hours=2))
    env = Envelope(
        **{**full_envelope().model_dump(), "time": datetime(2025, 1, 1, 12, tzinfo=plus_two)}
    )
    assert env.time == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert env.time.tzinfo == UTC
    with pytest.raises(ValidationError):
        Envelope(**{**env.model_dump(), "time": datetime(2025, 1, 1)})


def test_unknown_headers_are_ignored() -> None:
    env = full_envelope()
    headers = [*to_headers(env), ("x-retry-count", b"3"), ("ce_futureext", b"x")]
    assert from_headers(headers) == env


@pytest.mark.parametrize("header", ["ce_id", "ce_type", "ce_source", "ce_time", "ce_orgid"])
def test_missing_required_header_is_named(header: str) -> None:
    headers = [(n, v) for n, v in to_headers(full_envelope()) if n != header]
    with pytest.raises(EnvelopeError, match=header):
        from_headers(headers)


def test_all_missing_headers_are_listed_at_once() -> None:
    with pytest.raises(EnvelopeError) as info:
        from_headers([])
    for header in ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_orgid"):
        assert header in str(info.value)


def replace(header: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == header else v) for n, v in to_headers(full_envelope())]


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("ce_time", b"yesterday", "ce_time"),
        ("ce_time", b"2025-01-01T00:00:00", "ce_time"),  # no offset
        ("ce_type", b"PatientRegistered", "ce_type"),
        ("ce_specversion", b"0.3", "ce_specversion"),
        ("content-type", b"application/xml", "content-type"),
        ("ce_orgid", b"\xff\xfe", "ce_orgid"),
    ],
)
def test_invalid_header_is_named(header: str, value: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        from_headers(replace(header, value))


def test_envelope_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


def test_conflicting_duplicate_header_is_rejected() -> None:
    headers = [*to_headers(full_envelope()), ("ce_type", b"careloop.patients.patient.merged.v1")]
    with pytest.raises(EnvelopeError, match="twice"):
        from_headers(headers)


def test_malformed_traceparent_is_dropped_not_fatal() -> None:
    env = from_headers(replace("traceparent", b"garbage"))
    assert env.traceparent is None


def test_content_type_parameters_are_accepted() -> None:
    env = from_headers(replace("content-type", b"application/json; charset=utf-8"))
    assert env.datacontenttype == "application/json"


def test_for_event_takes_type_subject_and_tenant_from_the_event() -> None:
    event = PatientRegistered(
        patient_id="pat-9",
        org_id="org-9",
        location_id="loc-9",
        registered_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    env = Envelope.for_event(
        event, source="/careloop/patients", time=event.registered_at, traceparent=TRACEPARENT
    )
    assert env.type == PatientRegistered.event_type
    assert env.subject == "pat-9"
    assert (env.org_id, env.location_id) == ("org-9", "loc-9")
    assert from_headers(to_headers(env)) == env
