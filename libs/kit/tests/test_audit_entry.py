from __future__ import annotations

import pytest

from careloop_kit.audit import AuditEntry

pytestmark = pytest.mark.unit


def test_a_query_names_every_patient_it_disclosed_once_in_order() -> None:
    entry = AuditEntry(action="query", resource_type="Appointment", phi_categories=["clinical"])
    entry.disclose_patients(["p2", "p1", "p2", "p3", "p1"])
    assert entry.patient_id == "p2"
    assert entry.extra_patient_ids == ["p1", "p3"]


def test_a_query_that_found_nothing_names_nobody() -> None:
    entry = AuditEntry(action="query", resource_type="Appointment", phi_categories=["clinical"])
    entry.disclose_patients([])
    assert entry.patient_id is None
    assert entry.extra_patient_ids == []
