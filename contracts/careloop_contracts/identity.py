"""Events of the identity service (topic ``careloop.identity``): session, role and
break-glass events keyed by user id, location events keyed by location id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from careloop_contracts.base import Event, Id, UtcDatetime

RevocationReason = Literal["logout", "refresh_token_reuse", "admin"]


class SessionRevoked(Event):
    """Emitted when a login session ends before its limits: the user logged out, an
    already-used refresh token was presented again (reuse detection revokes the whole
    session), or an administrator revoked it. Services that verify access tokens keep
    the session id until its tokens would have expired and reject tokens whose `sid`
    it names. Keyed by user id so one user's session events stay in order."""

    event_type = "careloop.identity.session.revoked.v1"
    topic = "careloop.identity"
    key_fields = ("user_id",)

    session_id: Id = Field(description="The revoked session: the `sid` claim of its tokens.")
    org_id: Id = Field(description="Organization (tenant) of the session's user.")
    user_id: Id = Field(description="The session's user: the `sub` claim of its tokens.")
    revoked_at: UtcDatetime = Field(description="When the session was revoked (UTC).")
    reason: RevocationReason = Field(description="Why the session was revoked.")


BreakGlassReasonCode = Literal[
    "emergency_treatment", "urgent_continuity_of_care", "patient_unable_to_consent"
]


class BreakGlassGranted(Event):
    """Emitted when a provider opens one patient's record outside their locations
    (break-glass, emergency access). An alert for privacy officers: every grant is
    reviewed. Carries the typed reason code only; the free-text reason stays in the
    identity database, encrypted. The grant ends at `expires_at`; access tokens carry
    it in their `bg` claim until then. Keyed by user id."""

    event_type = "careloop.identity.break_glass.granted.v1"
    topic = "careloop.identity"
    key_fields = ("user_id",)

    grant_id: Id = Field(description="The grant: the `gid` of the token's `bg` entry.")
    org_id: Id = Field(description="Organization (tenant) of the user and the patient.")
    user_id: Id = Field(description="The provider who broke the glass (`sub`).")
    patient_id: Id = Field(description="The one patient the grant opens.")
    reason_code: BreakGlassReasonCode = Field(description="The typed reason for the access.")
    granted_at: UtcDatetime = Field(description="When the grant was made (UTC).")
    expires_at: UtcDatetime = Field(description="When the grant ends (UTC).")


class UserRolesChanged(Event):
    """Emitted when an administrator changes a user's roles, location scope or patient
    link. The user's open sessions end in the same transaction (their tokens carry the
    old roles; `SessionRevoked` events follow), so the new assignment applies from the
    next sign-in. Carries no PHI: roles and location ids only. Keyed by user id."""

    event_type = "careloop.identity.user.roles_changed.v1"
    topic = "careloop.identity"
    key_fields = ("user_id",)

    org_id: Id = Field(description="Organization (tenant) of the user.")
    user_id: Id = Field(description="The user whose assignment changed (`sub`).")
    changed_by: Id = Field(description="The administrator who changed it (`sub`).")
    roles_before: list[Id] = Field(description="Roles before the change.")
    roles_after: list[Id] = Field(description="Roles after the change.")
    locations_before: list[Id] = Field(description='Location scope before ("*" = all).')
    locations_after: list[Id] = Field(description='Location scope after ("*" = all).')
    sessions_ended: int = Field(ge=0, description="Open sessions the change ended.")
    changed_at: UtcDatetime = Field(description="When the change was made (UTC).")


LocationFeature = Literal["reminders", "two_way_confirmation", "waitlist", "self_scheduling"]
"""The per-location feature switches, each named after the workflow it turns on or off."""

LOCATION_FEATURES: tuple[LocationFeature, ...] = (
    "reminders",
    "two_way_confirmation",
    "waitlist",
    "self_scheduling",
)
"""Every switch a location may set. A switch that is absent is on: a new location runs
every workflow until an administrator turns one off (a location may go live with some
workflows first)."""


def feature_enabled(features: Mapping[str, bool], name: LocationFeature) -> bool:
    """Whether the workflow `name` runs at a location with these switches (absent: on)."""
    return bool(features.get(name, True))


class _LocationState(Event):
    """The whole of a location's shared state, as both location events carry it: a
    consumer keeps its view by replacing what it holds with the newest event's fields."""

    key_fields = ("location_id",)

    org_id: Id = Field(description="Organization (tenant) of the location.")
    location_id: Id = Field(description="The location.")
    name: str = Field(max_length=200, description="The location's display name.")
    time_zone: str = Field(max_length=64, description="IANA time zone, e.g. America/Chicago.")
    sensitive: bool = Field(
        description=(
            "A sensitive (behavioural-health) location: its appointments, messages and "
            "notes are visible only to staff scoped to it, and messages use a neutral "
            "sender name."
        )
    )
    features: dict[str, bool] = Field(
        description=(
            "Feature switches by name (reminders, two_way_confirmation, waitlist, "
            "self_scheduling); a switch not named is on."
        )
    )
    occurred_at: UtcDatetime = Field(
        description=(
            "When identity made the change (UTC). A consumer never lets an event older "
            "than the one it applied last overwrite its view."
        )
    )


class LocationCreated(_LocationState):
    """Emitted when an administrator adds a location to an organization, in the same
    transaction. Carries the location's name, zone, sensitivity and feature switches
    (no PHI). Keyed by location id so one location's events stay in order."""

    event_type = "careloop.identity.location.created.v1"
    topic = "careloop.identity"


class LocationChanged(_LocationState):
    """Emitted when an administrator changes a location (name, address, sensitivity,
    feature switches), in the same transaction. Carries the location's whole state after
    the change, not a difference, so a consumer that missed an event catches up with the
    next one. The address is not carried: no other service needs it. Keyed by location
    id."""

    event_type = "careloop.identity.location.changed.v1"
    topic = "careloop.identity"
