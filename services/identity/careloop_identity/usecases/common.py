"""What identity's use cases share: runtime state accessors, the audit actor and
record, the tenant check, session revocation and the typed errors the routes map to
problem+json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import SessionRevoked
from careloop_contracts.identity import RevocationReason
from careloop_identity.settings import IdentitySettings
from careloop_identity.signing import AccessTokenVerifier, TokenSigner
from careloop_identity.store.repository import IdentityRepository, StoredSession
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import AuthenticatedPrincipal, Principal, RevokedSessions
from careloop_kit.auth.revocation import REVOKED_SESSIONS_KEY
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import Runtime

UNKNOWN_ACTOR = "unknown"
ActorKind = Literal["user", "patient"]
BOOTSTRAP_ACTOR = "bootstrap"

RequestMeta = dict[str, Any]
"""Where a request came from, as the audit trail records it (`request_meta`)."""


class Locked(ProblemError):
    status, title, slug = 423, "Locked", "account-locked"


class InvalidCredentials(ProblemError):
    status, title, slug = 401, "Unauthorized", "invalid-credentials"


class Invalid(ProblemError):
    status, title, slug = 422, "Invalid request", "invalid-request"


@dataclass
class Failure:
    """A refused request whose state change and audit are committed before answering:
    the route turns it into its problem+json response after the transaction."""

    error: ProblemError
    headers: dict[str, str] | None = None


def settings_of(runtime: Runtime) -> IdentitySettings:
    settings: IdentitySettings = runtime.state["settings"]
    return settings


def signer_of(runtime: Runtime) -> TokenSigner:
    signer: TokenSigner = runtime.state["signer"]
    return signer


def verifier_of(runtime: Runtime) -> AccessTokenVerifier:
    verifier: AccessTokenVerifier = runtime.state["verifier"]
    return verifier


def hasher_of(runtime: Runtime) -> PasswordHasher:
    hasher: PasswordHasher = runtime.state["hasher"]
    return hasher


def field_key_of(runtime: Runtime) -> bytes:
    """The key of identity's encrypted fields (TOTP secrets, break-glass reasons)."""
    key: bytes = runtime.state["totp_key"]
    return key


def actor(user_id: str | None, org_id: str, actor_type: ActorKind = "user") -> Principal:
    """The audit actor: a user id, never an email (unknown accounts are `unknown`)."""
    return Principal(actor_id=user_id or UNKNOWN_ACTOR, actor_type=actor_type, org_id=org_id)


async def audit(
    runtime: Runtime,
    session: AsyncSession,
    meta: RequestMeta,
    who: Principal,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    outcome: str = "success",
    detail: str | None = None,
) -> None:
    """Stage one identity audit event (no PHI touched) in `session`'s transaction."""
    entry = AuditEntry(
        action=action, resource_type=resource_type, phi_categories=[], resource_id=resource_id
    )
    await recorder_of(runtime).record(
        session, who, entry, outcome=outcome, outcome_detail=detail, **meta
    )


def short(text: str, limit: int = 128) -> str:
    """An audit detail within the record's length (the event carries the full story)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def own_organization(principal: AuthenticatedPrincipal, org_id: str) -> None:
    """`NotFound` for another tenant's organization: its administration is not even
    acknowledged to exist (the same answer as for an organization that does not)."""
    if not principal.allows_org(org_id):
        raise NotFound(f"No organization {org_id}.")


async def announce_revocation(
    runtime: Runtime,
    session: AsyncSession,
    *,
    session_id: str,
    org_id: str,
    subject: str,
    reason: RevocationReason,
) -> None:
    """Publish that the tokens of `session_id` are dead (a login session, or a partner
    client's secret version), in `session`'s transaction.

    This replica refuses them at once; the others (and every other service) learn it
    from the event. Should the transaction roll back, the only effect is tokens refused
    early: the safe side."""
    now = runtime.clock.now()
    await runtime.outbox.add(
        session,
        SessionRevoked(
            session_id=session_id, org_id=org_id, user_id=subject, revoked_at=now, reason=reason
        ),
        org_id=org_id,
    )
    revoked = runtime.state.get(REVOKED_SESSIONS_KEY)
    if isinstance(revoked, RevokedSessions):
        revoked.revoke(session_id, at=now)


async def revoke_login(
    runtime: Runtime, session: AsyncSession, login: StoredSession, reason: RevocationReason
) -> bool:
    """Revoke `login` and announce it; False when it already was revoked."""
    if not await IdentityRepository(session).revoke_session(login.id, reason, runtime.clock.now()):
        return False
    await announce_revocation(
        runtime,
        session,
        session_id=login.id,
        org_id=login.org_id,
        subject=login.user_id,
        reason=reason,
    )
    return True
