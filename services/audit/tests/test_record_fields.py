"""The access record's fields are declared once, in the contract; the log's record, its
table and the API's read schema each follow from it, and these tests say when one drifts."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from careloop_audit.api.schemas import AuditRecordRead
from careloop_audit.domain.record import LOG_FIELDS, RecordFields
from careloop_audit.store.tables import audit_record
from careloop_contracts.audit import AccessRecorded, AccessRecordFields

pytestmark = pytest.mark.unit

CONTRACT = tuple(AccessRecordFields.model_fields)


def test_the_event_carries_exactly_the_declared_fields() -> None:
    assert tuple(AccessRecorded.model_fields) == CONTRACT
    assert len(CONTRACT) == 17


def test_the_chained_record_holds_the_contract_fields_and_the_logs_own() -> None:
    assert {f.name for f in fields(RecordFields)} == {*CONTRACT, *LOG_FIELDS}


def test_the_table_has_a_column_for_every_field_of_the_chained_record() -> None:
    columns = set(audit_record.columns.keys())
    assert {*CONTRACT, *LOG_FIELDS} <= columns
    for name in CONTRACT:
        column = audit_record.c[name]
        field = AccessRecordFields.model_fields[name]
        # Only a field that may be left out as None may be null in the table.
        nullable = not field.is_required() and field.default is None
        assert column.nullable == nullable, name


def test_the_read_schema_is_the_contract_plus_the_logs_fields() -> None:
    assert issubclass(AuditRecordRead, AccessRecordFields)
    assert set(AuditRecordRead.model_fields) == {*CONTRACT, *LOG_FIELDS}


def test_one_access_record_reads_back_as_it_was_published() -> None:
    event = AccessRecorded(
        audit_id=uuid4(),
        occurred_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        org_id="org-1",
        actor_id="user-1",
        actor_type="user",
        action="read",
        outcome="success",
        patient_id="pat-1",
        resource_type="Patient",
        resource_id="pat-1",
        phi_categories=("demographics", "contact"),
        source_service="patients",
        request_id="req-1",
    )
    recorded_at = datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC)
    record = RecordFields.of(event, seq=7, event_id="evt-1", recorded_at=recorded_at)
    assert record.audit_id == str(event.audit_id)
    assert record.phi_categories == ("demographics", "contact")
    read = AuditRecordRead.of(record)
    assert read.model_dump(include=set(CONTRACT)) == event.model_dump()
    assert (read.seq, read.event_id, read.recorded_at) == (7, "evt-1", recorded_at)
