"""The kit's request context: loading an aggregate in the caller's scope, and the
dependency that builds the context for a route with the route's permission."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from careloop_kit.audit import AuditEntry
from careloop_kit.auth import require, required_permission
from careloop_kit.context import load_in_scope, request_context
from careloop_kit.errors import Forbidden, NotFound

pytestmark = pytest.mark.unit


@dataclass
class Visit:
    id: str
    patient_id: str


def entry() -> AuditEntry:
    return AuditEntry(action="read", resource_type="Appointment", phi_categories=["clinical"])


async def found(value: Visit | None) -> Visit | None:
    return value


async def test_a_missing_aggregate_is_a_404_with_the_callers_words() -> None:
    audited = entry()
    with pytest.raises(NotFound, match="No visit v-1"):
        await load_in_scope(
            audited,
            found(None),
            missing="No visit v-1 in this organization.",
            patient_of=lambda v: v.patient_id,
            check=lambda v: None,
        )
    assert audited.patient_id is None


async def test_the_patient_is_named_before_the_check_refuses() -> None:
    audited = entry()

    async def refuse(visit: Visit) -> None:
        # The trail of a refused access must already name whose record it was.
        assert audited.patient_id == "pat-1"
        raise Forbidden("not your location")

    with pytest.raises(Forbidden):
        await load_in_scope(
            audited,
            found(Visit("v-1", "pat-1")),
            missing="No visit v-1.",
            patient_of=lambda v: v.patient_id,
            check=refuse,
        )
    assert audited.patient_id == "pat-1"


async def test_a_plain_check_is_accepted_and_the_aggregate_returned() -> None:
    checked: list[str] = []
    visit = await load_in_scope(
        entry(),
        found(Visit("v-2", "pat-2")),
        missing="No visit v-2.",
        patient_of=lambda v: v.patient_id,
        check=lambda v: checked.append(v.id),
    )
    assert visit == Visit("v-2", "pat-2")
    assert checked == ["v-2"]


def test_the_context_dependency_names_the_routes_permission() -> None:
    dependency = request_context(require("scheduling:book"), lambda session: None)
    assert required_permission(dependency) == "scheduling:book"
