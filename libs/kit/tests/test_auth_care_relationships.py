"""A care relationship opens a patient to staff of its location, and nobody else."""

from __future__ import annotations

import pytest

from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.auth.principal import (
    EMERGENCY_TREATMENT,
    TREATMENT,
    BreakGlassGrant,
    CareRelationship,
)
from careloop_kit.problems import Forbidden

pytestmark = pytest.mark.unit

AT_SOUTH = CareRelationship(
    relationship_id="rel-1", patient_id="p-1", location_id="loc-south", kind="appointment"
)


def staff(*locations: str, grants: tuple[BreakGlassGrant, ...] = ()) -> AuthenticatedPrincipal:
    return AuthenticatedPrincipal(
        actor_id="u-1",
        actor_type="user",
        org_id="org-1",
        roles=("front_desk",),
        locations=locations,
        grants=grants,
    )


def test_a_relationship_opens_the_patient_to_staff_of_its_location_only() -> None:
    # The record is at loc-north; the appointment is at loc-south.
    assert staff("loc-south").can_access_patient("p-1", "loc-north", relationships=[AT_SOUTH])
    assert staff("loc-south").allows_patient("p-1", "loc-north", relationships=[AT_SOUTH])
    with pytest.raises(Forbidden):
        staff("loc-south").can_access_patient("p-1", "loc-north")
    with pytest.raises(Forbidden):
        staff("loc-east").can_access_patient("p-1", "loc-north", relationships=[AT_SOUTH])
    # A relationship of another patient opens nothing.
    with pytest.raises(Forbidden):
        staff("loc-south").can_access_patient("p-2", "loc-north", relationships=[AT_SOUTH])


def test_a_patient_account_never_reaches_a_record_through_a_relationship() -> None:
    portal = AuthenticatedPrincipal(
        actor_id="portal-2",
        actor_type="patient",
        org_id="org-1",
        roles=("patient",),
        patient_id="p-2",
        locations=("loc-south",),
    )
    assert portal.relationship_for("p-1", [AT_SOUTH]) is None
    with pytest.raises(Forbidden):
        portal.can_access_patient("p-1", "loc-north", relationships=[AT_SOUTH])


def test_another_tenant_is_refused_whatever_the_relationship() -> None:
    with pytest.raises(Forbidden):
        staff("loc-south").can_access_patient(
            "p-1", "loc-north", org_id="org-2", relationships=[AT_SOUTH]
        )


def test_the_purpose_names_the_relationship_only_when_it_opened_the_access() -> None:
    south = staff("loc-south")
    assert south.purpose_for("p-1", "loc-north", relationships=[AT_SOUTH]) == (
        "APPOINTMENT_RELATIONSHIP"
    )
    assert south.acting_for("p-1", "loc-north", relationships=[AT_SOUTH]).purpose_of_use == (
        "APPOINTMENT_RELATIONSHIP"
    )
    # The record at the caller's own location: ordinary treatment.
    assert south.purpose_for("p-1", "loc-south", relationships=[AT_SOUTH]) == TREATMENT
    assert staff("*").purpose_for("p-1", "loc-north", relationships=[AT_SOUTH]) == TREATMENT
    # A relationship needs no break-glass: it wins over a grant.
    grant = BreakGlassGrant(patient_id="p-1", expires_at=2**40, grant_id="bg-1")
    with_grant = staff("loc-south", grants=(grant,))
    assert with_grant.purpose_for("p-1", "loc-north", relationships=[AT_SOUTH]) == (
        "APPOINTMENT_RELATIONSHIP"
    )
    assert with_grant.purpose_for("p-1", "loc-north") == EMERGENCY_TREATMENT


def test_a_later_kind_is_a_new_row_not_a_new_check() -> None:
    referral = CareRelationship(
        relationship_id="rel-2", patient_id="p-1", location_id="loc-east", kind="care_gap"
    )
    east = staff("loc-east")
    assert east.can_access_patient("p-1", "loc-north", relationships=[AT_SOUTH, referral])
    assert east.purpose_for("p-1", "loc-north", relationships=[AT_SOUTH, referral]) == (
        "CARE_GAP_RELATIONSHIP"
    )


@pytest.mark.parametrize("kind", ["", "Appointment", "appointment-1", "a" * 20])
def test_a_kind_must_make_a_legal_purpose_of_use(kind: str) -> None:
    with pytest.raises(ValueError, match="kind"):
        CareRelationship(relationship_id="r", patient_id="p", location_id="l", kind=kind)
