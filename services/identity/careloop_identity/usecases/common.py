"""What identity's use cases share: runtime state accessors, the audit actor and the
entry of a step that touches no PHI, the tenant check, session revocation and the typed
errors the routes map to problem+json.

Steps no principal calls (sign-in, token requests) audit through the kit's
`StepContext`, naming their actor with `actor`; the others through the request context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import SessionRevoked
from careloop_contracts.identity import RevocationReason
from careloop_contracts.platform import IDENTITY_FIELDS_KEY
from careloop_identity.settings import IdentitySettings
from careloop_identity.signing import AccessTokenVerifier, TokenSigner
from careloop_identity.store.repository import IdentityRepository, StoredSession
from careloop_identity.store.tables import break_glass_grant, field_key, user_account
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal, Principal, RevokedSessions
from careloop_kit.auth.revocation import REVOKED_SESSIONS_KEY
from careloop_kit.clock import Clock
from careloop_kit.crypto import KeyRing
from careloop_kit.fields import FieldCipher, LegacyKey, SealedColumn
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import Runtime
from careloop_kit.vault import Vault

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


LEGACY_FIELD_KEY_ID = "totp-key"
"""The DEK id the associated data of identity's fields named before the kit's port."""

ENCRYPTED_COLUMNS = (
    SealedColumn(user_account, "totp_secret_ct", "totp_secret"),
    SealedColumn(break_glass_grant, "reason_ct", "reason_ct"),
)
"""Every column of identity sealed through the port (with the column name the associated
data carries)."""


def field_cipher(
    vault: Vault, legacy_key: bytes | None, *, clock: Clock | None = None
) -> FieldCipher:
    """Identity's port to its encrypted fields: data keys wrapped by identity's transit
    key; the fixed key of before only opens what `careloop keys rewrap identity` has not
    moved yet."""
    legacy = None if legacy_key is None else LegacyKey(legacy_key, LEGACY_FIELD_KEY_ID)
    return FieldCipher(KeyRing(vault, IDENTITY_FIELDS_KEY, clock=clock), field_key, legacy=legacy)


def field_cipher_of(runtime: Runtime) -> FieldCipher:
    """The port of identity's encrypted fields (TOTP secrets, break-glass reasons)."""
    cipher: FieldCipher | None = runtime.state.get("field_cipher")
    if cipher is None:
        cipher = field_cipher(runtime.vault, runtime.state.get("totp_key"), clock=runtime.clock)
        runtime.state["field_cipher"] = cipher
    return cipher


def actor(user_id: str | None, org_id: str, actor_type: ActorKind = "user") -> Principal:
    """The audit actor: a user id, never an email (unknown accounts are `unknown`)."""
    return Principal(actor_id=user_id or UNKNOWN_ACTOR, actor_type=actor_type, org_id=org_id)


def identity_entry(
    action: str, resource_type: str, resource_id: str | None = None, *, detail: str | None = None
) -> AuditEntry:
    """The audit entry of an identity step: no PHI touched (a break-glass grant names
    the patient it opens, though), `detail` the record's words for what happened."""
    return AuditEntry(action, resource_type, [], resource_id=resource_id, outcome_detail=detail)


AUDIT_DETAIL = 128
"""The longest detail an audit record carries."""


def short(text: str, limit: int = AUDIT_DETAIL) -> str:
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
