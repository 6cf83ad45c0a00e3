"""Events of the identity service (topic ``careloop.identity``, keyed by user id)."""

from __future__ import annotations

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
