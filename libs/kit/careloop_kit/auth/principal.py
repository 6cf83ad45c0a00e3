"""Who is calling: the principal of a request.

`Principal` is what audit records and services see. `AuthenticatedPrincipal`
is the principal of a verified access token (see `careloop_kit.auth.dependencies`):
it adds roles, location scopes, the patient a portal account is linked to and
the session, plus the object-level checks every service applies.

Break-glass: a provider's token may carry grants (the `bg` claim), each opening
one patient of the same organization outside the provider's locations until it
expires. `authenticate` keeps only the grants still active by the verifier's
clock. An access that relies on a grant is emergency treatment: the audit event
of that request carries purpose of use `ETREAT` (see `acting_for`).

Care relationships: a service that keeps them (an appointment, later a referral or a
care gap, at one of the organization's locations) hands the open ones of a patient to
the checks below (`relationships=`). Staff scoped to a relationship's location reach
the patient as if the patient were at that location, with what their role allows, and
the access is audited with the relationship's purpose of use (`<KIND>_RELATIONSHIP`,
e.g. `APPOINTMENT_RELATIONSHIP`). A new kind is a new row, never a new check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

from careloop_kit.errors import Forbidden

ActorType = Literal["user", "service", "partner", "patient", "system"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# The audit record's purpose of use is an upper-case code of at most 32 characters.
_RELATIONSHIP_KIND = re.compile(r"^[a-z][a-z_]{0,18}$")
RELATIONSHIP_PURPOSE_SUFFIX: Final = "_RELATIONSHIP"


@dataclass(frozen=True)
class BreakGlassGrant:
    """One entry of the `bg` claim: emergency access to one patient outside the
    caller's locations, until `expires_at` (epoch seconds), by grant `grant_id`."""

    patient_id: str
    expires_at: int
    grant_id: str

    def active_at(self, now: float) -> bool:
        """Whether the grant still holds at `now` (epoch seconds; no leeway)."""
        return now < self.expires_at


@dataclass(frozen=True)
class CareRelationship:
    """An open reason for staff of `location_id` to reach `patient_id`'s record: an
    appointment there (`kind="appointment"`), later a referral or a care gap.
    `relationship_id` names the row that holds it."""

    relationship_id: str
    patient_id: str
    location_id: str
    kind: str

    def __post_init__(self) -> None:
        if not _RELATIONSHIP_KIND.fullmatch(self.kind):
            raise ValueError(f"care relationship kind {self.kind!r}: use [a-z_], at most 19")

    @property
    def purpose_of_use(self) -> str:
        """The purpose of use of an access this relationship opened."""
        return relationship_purpose(self.kind)


def relationship_purpose(kind: str) -> str:
    """`<KIND>_RELATIONSHIP`: the purpose of use of an access opened by a care
    relationship of `kind`."""
    return kind.upper() + RELATIONSHIP_PURPOSE_SUFFIX


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the tenant it acts in."""

    actor_id: str
    actor_type: ActorType
    org_id: str
    purpose_of_use: str = "TREAT"


ALL_LOCATIONS = "*"
TREATMENT: Final = "TREAT"
EMERGENCY_TREATMENT: Final = "ETREAT"


@dataclass(frozen=True)
class AuthenticatedPrincipal(Principal):
    """The caller of a verified access token.

    `actor_id` is the token's `sub`, `actor_type` its `act`, `org_id` its `org`.
    The `can_*` checks return True or raise `Forbidden`, so a forgotten `if`
    still denies; `allows_*` are the plain predicates for filtering lists.
    """

    roles: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    patient_id: str | None = None
    session_id: str | None = None
    scopes: frozenset[str] = frozenset()
    token_id: str | None = None
    amr: tuple[str, ...] = ()
    grants: tuple[BreakGlassGrant, ...] = ()
    """Break-glass grants still active when the token was verified."""

    @property
    def used_mfa(self) -> bool:
        """Whether the session was opened with a second factor (`otp` in `amr`)."""
        return "otp" in self.amr

    @property
    def is_patient(self) -> bool:
        """A portal account: it may only ever reach its own record."""
        return self.actor_type == "patient" or "patient" in self.roles

    def allows_org(self, org_id: str) -> bool:
        """Whether `org_id` is the caller's own tenant."""
        return org_id == self.org_id

    def allows_location(self, location_id: str | None) -> bool:
        """Whether a location is inside the caller's scope (a patient has none).

        Staff, partner clients and services alike are scoped by their token's locations
        (`*`: every location of the organization). A partner client's are the ones
        identity registered for it, so a partner is refused elsewhere, as staff are."""
        if self.is_patient:
            return False
        if ALL_LOCATIONS in self.locations:
            return True
        return location_id is not None and location_id in self.locations

    def allows_patient(
        self,
        patient_id: str,
        location_id: str | None,
        *,
        org_id: str | None = None,
        relationships: Iterable[CareRelationship] = (),
    ) -> bool:
        """Whether the caller may reach this patient's record: through the record's
        location, or through an open care relationship at one of the caller's."""
        if org_id is not None and not self.allows_org(org_id):
            return False
        if self.is_patient:
            return self.patient_id is not None and patient_id == self.patient_id
        if self.allows_location(location_id):
            return True
        return self.relationship_for(patient_id, relationships) is not None

    def relationship_for(
        self, patient_id: str, relationships: Iterable[CareRelationship]
    ) -> CareRelationship | None:
        """The first open care relationship of `patient_id` at a location the caller's
        scope names, or None. A patient account never reaches a record this way."""
        if self.is_patient:
            return None
        for relationship in relationships:
            at_own_location = relationship.location_id in self.locations
            if relationship.patient_id == patient_id and at_own_location:
                return relationship
        return None

    def listing_scope(self, patient_id: str | None) -> tuple[str | None, tuple[str, ...] | None]:
        """The bounds of a list of per-patient records, as `(patient_id, locations)`.

        A patient account is pinned to its own record (`Forbidden` if it names another;
        `"-"`, which matches nothing, if its token carries no record). Staff keep the
        patient filter they gave and are limited to their locations (`None`: every
        location of the organization)."""
        if self.is_patient:
            if patient_id is not None and patient_id != self.patient_id:
                raise Forbidden("A patient account may only access its own record.")
            return self.patient_id or "-", None
        if ALL_LOCATIONS in self.locations:
            return patient_id, None
        return patient_id, tuple(self.locations)

    def grant_for(self, patient_id: str, *, now: float | None = None) -> BreakGlassGrant | None:
        """The break-glass grant naming `patient_id` (still active at `now`, epoch
        seconds, when given), or None. A patient account never holds one."""
        if self.is_patient:
            return None
        for grant in self.grants:
            if grant.patient_id == patient_id and (now is None or grant.active_at(now)):
                return grant
        return None

    def allows_patient_by_grant(
        self, patient_id: str, *, org_id: str | None = None, now: float | None = None
    ) -> bool:
        """Whether a break-glass grant opens this patient (same tenant only)."""
        if org_id is not None and not self.allows_org(org_id):
            return False
        return self.grant_for(patient_id, now=now) is not None

    def purpose_for(
        self,
        patient_id: str,
        location_id: str | None = None,
        *,
        relationships: Iterable[CareRelationship] = (),
    ) -> str:
        """The purpose of use of an access to this patient: the principal's own when
        the record's location is in scope; the relationship's (`<KIND>_RELATIONSHIP`)
        when an open care relationship at one of the caller's locations opens it;
        `ETREAT` when it relies on a break-glass grant (the patient is outside the
        caller's locations, or its location is not known yet, and a grant names it);
        else the principal's own."""
        if location_id is not None and self.allows_location(location_id):
            return self.purpose_of_use
        if self.is_patient:
            return self.purpose_of_use
        relationship = self.relationship_for(patient_id, relationships)
        if relationship is not None and ALL_LOCATIONS not in self.locations:
            return relationship.purpose_of_use
        if self.grant_for(patient_id) is not None and ALL_LOCATIONS not in self.locations:
            return EMERGENCY_TREATMENT
        return self.purpose_of_use

    def acting_for(
        self,
        patient_id: str,
        location_id: str | None = None,
        *,
        relationships: Iterable[CareRelationship] = (),
    ) -> AuthenticatedPrincipal:
        """This principal with the purpose of use of an access to `patient_id`: the
        one to hand to the audit recorder for that request."""
        purpose = self.purpose_for(patient_id, location_id, relationships=relationships)
        if purpose == self.purpose_of_use:
            return self
        return replace(self, purpose_of_use=purpose)

    def can_access_org(self, org_id: str) -> bool:
        """True, or `Forbidden` for another tenant's resource."""
        if not self.allows_org(org_id):
            raise Forbidden("This resource belongs to another organization.")
        return True

    def can_access_location(self, location_id: str | None) -> bool:
        """True, or `Forbidden` when the location is outside the caller's scope."""
        if not self.allows_location(location_id):
            raise Forbidden("This location is outside your access scope.")
        return True

    def can_access_patient(
        self,
        patient_id: str,
        location_id: str | None,
        *,
        org_id: str | None = None,
        relationships: Iterable[CareRelationship] = (),
    ) -> bool:
        """True, or `Forbidden`: patients reach only their own record; staff only
        patients of a location in their scope (or every location with `*`), patients
        with an open care relationship at one of their locations, or the patient an
        active break-glass grant names."""
        if org_id is not None:
            self.can_access_org(org_id)
        if not self.allows_patient(
            patient_id, location_id, relationships=relationships
        ) and not self.allows_patient_by_grant(patient_id):
            if self.is_patient:
                raise Forbidden("A patient account may only access its own record.")
            raise Forbidden("This patient is outside your location scope.")
        return True
