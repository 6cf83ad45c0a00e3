from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from careloop_kit.auth import AuthenticatedPrincipal, RevokedSessions
from careloop_kit.clock import FrozenClock
from careloop_kit.problems import Forbidden

pytestmark = pytest.mark.unit


def staff(*locations: str) -> AuthenticatedPrincipal:
    return AuthenticatedPrincipal(
        actor_id="u-1", actor_type="user", org_id="org-1", roles=("provider",), locations=locations
    )


PATIENT = AuthenticatedPrincipal(
    actor_id="portal-1", actor_type="patient", org_id="org-1", roles=("patient",), patient_id="p-1"
)


def test_staff_location_scope() -> None:
    assert staff("loc-1").can_access_location("loc-1")
    assert staff("*").can_access_location("anywhere")
    with pytest.raises(Forbidden):
        staff("loc-1").can_access_location("loc-2")
    with pytest.raises(Forbidden):
        staff("loc-1").can_access_location(None)
    with pytest.raises(Forbidden):
        staff().can_access_location("loc-1")
    assert staff("*").can_access_location(None)


def partner(*locations: str) -> AuthenticatedPrincipal:
    """A partner client's principal: scopes, no roles, and the locations identity
    registered for the client (its token's `loc`: a list, or `*` for all)."""
    return AuthenticatedPrincipal(
        actor_id="client-1",
        actor_type="partner",
        org_id="org-1",
        scopes=frozenset({"referrals:create"}),
        locations=locations,
    )


def test_a_partner_reaches_the_locations_its_client_was_registered_for() -> None:
    listed = partner("loc-1", "loc-2")
    assert listed.can_access_location("loc-1")
    assert listed.can_access_location("loc-2")
    assert listed.can_access_patient("p-1", "loc-2", org_id="org-1")
    with pytest.raises(Forbidden, match="outside your access scope"):
        listed.can_access_location("loc-3")
    with pytest.raises(Forbidden, match="outside your location scope"):
        listed.can_access_patient("p-1", "loc-3")
    # A record with no location is reached only by a scope of every location.
    with pytest.raises(Forbidden):
        listed.can_access_location(None)


def test_a_partner_of_every_location_reaches_each_of_its_organization_only() -> None:
    everywhere = partner("*")
    assert everywhere.can_access_location("loc-9")
    assert everywhere.can_access_location(None)
    assert everywhere.listing_scope(None) == (None, None)
    with pytest.raises(Forbidden, match="another organization"):
        everywhere.can_access_patient("p-1", "loc-9", org_id="org-2")


def test_a_partner_token_without_locations_reaches_none() -> None:
    with pytest.raises(Forbidden):
        partner().can_access_location("loc-1")


def test_patient_own_record_only() -> None:
    assert PATIENT.can_access_patient("p-1", "loc-7")
    assert PATIENT.can_access_patient("p-1", None)
    with pytest.raises(Forbidden):
        PATIENT.can_access_patient("p-2", "loc-7")
    with pytest.raises(Forbidden):
        PATIENT.can_access_location("loc-7")


def test_patient_role_without_patient_id_reaches_nothing() -> None:
    broken = AuthenticatedPrincipal(
        actor_id="x", actor_type="user", org_id="org-1", roles=("patient",), locations=("*",)
    )
    assert not broken.allows_patient("p-1", "loc-1")


def test_listing_scope_pins_patients_and_bounds_staff() -> None:
    assert PATIENT.listing_scope(None) == ("p-1", None)
    assert PATIENT.listing_scope("p-1") == ("p-1", None)
    with pytest.raises(Forbidden, match="its own record"):
        PATIENT.listing_scope("p-2")
    # A patient token without a record lists nothing, whatever it asks for.
    broken = AuthenticatedPrincipal(
        actor_id="x", actor_type="patient", org_id="org-1", roles=("patient",)
    )
    assert broken.listing_scope(None) == ("-", None)
    assert staff("loc-1", "loc-2").listing_scope("p-9") == ("p-9", ("loc-1", "loc-2"))
    assert staff("*").listing_scope(None) == (None, None)
    assert staff().listing_scope("p-9") == ("p-9", ())


def test_other_tenant_is_forbidden() -> None:
    assert staff("*").can_access_patient("p-1", "loc-1", org_id="org-1")
    with pytest.raises(Forbidden):
        staff("*").can_access_patient("p-1", "loc-1", org_id="org-2")
    with pytest.raises(Forbidden):
        PATIENT.can_access_patient("p-1", None, org_id="org-2")
    with pytest.raises(Forbidden):
        staff("*").can_access_org("org-2")


@dataclass
class SessionRevoked:
    session_id: str


async def test_revocation_handler_takes_event_objects_and_expires() -> None:
    clock = FrozenClock()
    revoked = RevokedSessions(ttl_s=600, clock=clock)
    handler = revoked.handler()

    await handler(None, None, SessionRevoked("s-1"))
    await handler(None, None, {"session_id": ""})
    await handler(None, None, {"other": "field"})

    assert revoked.is_revoked("s-1")
    assert len(revoked) == 1
    clock.advance(timedelta(seconds=599))
    assert revoked.is_revoked("s-1")
    clock.advance(timedelta(seconds=2))
    assert not revoked.is_revoked("s-1")


def test_revocation_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl"):
        RevokedSessions(ttl_s=0)
