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
