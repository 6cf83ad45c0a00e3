"""Sign-in and sessions: login, refresh, logout, TOTP enrollment and break-glass.

Failures that must stick (failed-attempt counters, lockouts, reuse detection and
their audit events) are committed before the error response goes out, so these steps
open their transaction themselves and return a `Failure` for the route to answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import uuid4

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import BreakGlassGranted, RevocationReason
from careloop_identity.domain.lockout import (
    CLEAN,
    FailureState,
    LockoutPolicy,
    after_failure,
)
from careloop_identity.domain.roles import make_assignment
from careloop_identity.domain.session import SessionLimits, SessionState, refusal
from careloop_identity.domain.tokens import AccessGrant, BreakGlassEntry
from careloop_identity.store.repository import (
    IdentityRepository,
    StoredBreakGlassGrant,
    StoredSession,
    StoredUser,
)
from careloop_identity.usecases.common import (
    ActorKind,
    Failure,
    InvalidCredentials,
    Locked,
    RequestMeta,
    actor,
    field_cipher_of,
    hasher_of,
    identity_entry,
    revoke_login,
    settings_of,
    signer_of,
    verifier_of,
)
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import Principal, totp
from careloop_kit.auth.tokens import MAX_BREAK_GLASS_GRANTS
from careloop_kit.context import StepContext, own_transaction
from careloop_kit.problems import Conflict, Forbidden, ProblemError, Unauthorized
from careloop_kit.rows import values_of
from careloop_kit.service import Runtime

WRONG_CREDENTIALS = "The email, password or one-time code is not correct."


class InvalidOtp(ProblemError):
    status, title, slug = 422, "Invalid one-time code", "invalid-otp"


@dataclass(frozen=True)
class Credentials:
    """What a sign-in presents."""

    org_id: str
    email: str
    password: str
    otp: str | None = None


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    mfa_enrollment_required: bool = False


@dataclass(frozen=True)
class MfaSecret:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class BreakGlassAsk:
    """One patient to open, the typed reason and the reason in the caller's words."""

    patient_id: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class BreakGlassIssued:
    grant_id: str
    patient_id: str
    reason_code: str
    granted_at: datetime
    expires_at: datetime
    access_token: str
    expires_in: int


def _hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _totp_where(user: StoredUser) -> dict[str, str]:
    return {
        "org_id": user.org_id,
        "table": "user_account",
        "column": "totp_secret",
        "row_id": user.id,
    }


async def _totp_secret(runtime: Runtime, session: AsyncSession, user: StoredUser) -> bytes | None:
    if user.totp_secret_ct is None:
        return None
    return totp.from_base32(
        await field_cipher_of(runtime).open_field(session, user.totp_secret_ct, **_totp_where(user))
    )


def _kind(user: StoredUser | None) -> ActorKind:
    return "patient" if user is not None and "patient" in user.roles else "user"


async def _end_session(
    step: StepContext,
    login: StoredSession,
    reason: RevocationReason,
    *,
    action: str,
    refusal: str | None = None,
) -> None:
    """Revoke `login` (locked by the caller) and audit it as its user's act, as the
    refusal named when there is one; nothing when it already was revoked."""
    if login.revoked_at is not None:
        return
    user = await IdentityRepository(step.session).get_user(login.org_id, login.user_id)
    entry = identity_entry(action, "Session", login.id)
    async with step.audited(actor(login.user_id, login.org_id, _kind(user)), entry):
        await revoke_login(step.runtime, step.session, login, reason)
        if refusal is not None:
            entry.refuse(refusal)


def _mfa_step(
    step: StepContext, user: StoredUser, detail: str
) -> AbstractAsyncContextManager[AuditEntry]:
    """Audit a step of the user's own TOTP enrollment, as the user's act."""
    entry = identity_entry("update", "User", user.id, detail=detail)
    return step.audited(actor(user.id, user.org_id, _kind(user)), entry)


def _grant(
    user: StoredUser, login: StoredSession, grants: list[StoredBreakGlassGrant]
) -> AccessGrant:
    assignment = make_assignment(user.roles, list(user.locations), user.patient_id)
    return AccessGrant(
        user_id=user.id,
        org_id=user.org_id,
        session_id=login.id,
        actor_type=assignment.actor_type,
        roles=assignment.roles,
        locations=assignment.locations,
        patient_id=assignment.patient_id,
        amr=login.amr,
        break_glass=tuple(BreakGlassEntry(g.patient_id, g.expires_at, g.id) for g in grants),
    )


async def _access_token(
    runtime: Runtime, repo: IdentityRepository, user: StoredUser, login: StoredSession
) -> str:
    """An access token for the session, carrying its unexpired break-glass grants."""
    grants = await repo.active_break_glass_grants(login.id, runtime.clock.now())
    return await signer_of(runtime).issue(_grant(user, login, grants))


async def _tokens(
    runtime: Runtime,
    repo: IdentityRepository,
    user: StoredUser,
    login: StoredSession,
    *,
    mfa_enrollment_required: bool = False,
) -> IssuedTokens:
    refresh = secrets.token_urlsafe(32)
    await repo.add_refresh_token(_hash_refresh(refresh), login.id, runtime.clock.now())
    signer = signer_of(runtime)
    return IssuedTokens(
        access_token=await _access_token(runtime, repo, user, login),
        refresh_token=refresh,
        expires_in=int(signer.ttl.total_seconds()),
        mfa_enrollment_required=mfa_enrollment_required,
    )


async def _password_matches(runtime: Runtime, password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(hasher_of(runtime).verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# --- login ---------------------------------------------------------------------------


async def login(
    runtime: Runtime, credentials: Credentials, *, meta: RequestMeta
) -> IssuedTokens | Failure:
    """Sign in with email and password (and a TOTP code once enrolled). A refusal and
    what it changes (failure counter, lockout, audit) are committed too."""
    async with own_transaction(runtime, **meta) as step:
        email = credentials.email.strip().lower()
        user = await IdentityRepository(step.session).find_user_by_email(credentials.org_id, email)
        who = actor(user.id if user else None, credentials.org_id, _kind(user))
        async with step.audited(who, identity_entry("create", "Session")) as entry:
            return await _login(step, entry, credentials, user)


async def _login(
    step: StepContext, entry: AuditEntry, credentials: Credentials, user: StoredUser | None
) -> IssuedTokens | Failure:
    runtime, repo = step.runtime, IdentityRepository(step.session)
    now = runtime.clock.now()

    if user is None:
        # Same work and same answer as a wrong password: no account enumeration.
        await _password_matches(runtime, runtime.state["dummy_hash"], credentials.password)
        entry.refuse("401 unknown account")
        return Failure(InvalidCredentials(WRONG_CREDENTIALS))

    settings = settings_of(runtime)
    policy = LockoutPolicy(
        threshold=settings.lockout_threshold,
        duration=timedelta(seconds=settings.lockout_duration_s),
    )
    state = FailureState(user.failed_attempts, user.locked_until)
    if state.locked_at(now):
        entry.refuse("423 account locked")
        return _locked(state, now)

    async def failed(reason: str) -> Failure:
        new_state = after_failure(state, now, policy)
        await repo.set_failures(user.id, new_state.failed_attempts, new_state.locked_until, now)
        if new_state.locked_at(now):
            entry.refuse(f"423 locked after {policy.threshold} consecutive failures ({reason})")
            return _locked(new_state, now)
        entry.refuse(f"401 {reason}")
        return Failure(InvalidCredentials(WRONG_CREDENTIALS))

    if not await _password_matches(runtime, user.password_hash, credentials.password):
        return await failed("wrong password")

    amr: tuple[str, ...] = ("pwd",)
    if user.totp_enabled:
        if credentials.otp is None:
            entry.refuse("401 one-time code required")
            return Failure(
                InvalidCredentials(
                    "This account uses two-step verification: send the current code as `otp`.",
                    mfa_required=True,
                )
            )
        secret = await _totp_secret(runtime, step.session, user)
        step_used = (
            None
            if secret is None
            else totp.verify(secret, credentials.otp, now, last_used_step=user.totp_last_step)
        )
        if step_used is None:
            return await failed("wrong one-time code")
        await repo.set_totp_last_step(user.id, step_used)
        amr = ("pwd", "otp")

    await repo.set_failures(user.id, CLEAN.failed_attempts, CLEAN.locked_until, now)
    hasher = hasher_of(runtime)
    if hasher.check_needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(hasher.hash, credentials.password)
        await repo.set_password_hash(user.id, new_hash, now)
    login = await repo.add_session(str(uuid4()), user.org_id, user.id, amr, now)
    requires_mfa = make_assignment(user.roles, list(user.locations), user.patient_id).requires_mfa
    tokens = await _tokens(
        runtime,
        repo,
        user,
        login,
        mfa_enrollment_required=requires_mfa and not user.totp_enabled,
    )
    entry.resource_id = login.id
    return tokens


def _locked(state: FailureState, now: datetime) -> Failure:
    retry_after = state.retry_after_s(now)
    return Failure(
        Locked(
            "Too many failed sign-in attempts; the account is locked for now.",
            retry_after_s=retry_after,
        ),
        headers={"Retry-After": str(retry_after)},
    )


# --- refresh -------------------------------------------------------------------------


async def refresh(runtime: Runtime, token: str, *, meta: RequestMeta) -> IssuedTokens | Failure:
    """New tokens for a refresh token, which stops working; a second use of one ends its
    session for every holder (committed before the refusal goes out)."""
    async with own_transaction(runtime, **meta) as step:
        return await _refresh(step, token)


async def _refresh(step: StepContext, token: str) -> IssuedTokens | Failure:
    runtime, repo = step.runtime, IdentityRepository(step.session)
    now = runtime.clock.now()
    stored = await repo.get_refresh_token(_hash_refresh(token))
    if stored is None:
        return Failure(Unauthorized("Unknown refresh token; sign in again."))
    login = await repo.get_session(stored.session_id, for_update=True)
    assert login is not None  # a foreign key guarantees it
    if stored.used_at is not None:
        # A refresh token works once: a second use means it was copied. End the session
        # for every holder, the legitimate user included.
        await _end_session(
            step,
            login,
            "refresh_token_reuse",
            action="update",
            refusal="401 refresh token reuse: session revoked",
        )
        return Failure(Unauthorized("This refresh token was already used; sign in again."))
    settings = settings_of(runtime)
    limits = SessionLimits(
        idle=timedelta(seconds=settings.session_idle_timeout_s),
        absolute=timedelta(seconds=settings.session_absolute_timeout_s),
    )
    why = refusal(
        SessionState(login.created_at, login.last_active_at, login.revoked_at), now, limits
    )
    if why is not None:
        messages = {
            "revoked": "The session was ended; sign in again.",
            "idle": "The session expired after inactivity; sign in again.",
            "absolute": "The session reached its maximum length; sign in again.",
        }
        return Failure(Unauthorized(messages[why], reason=why))
    user = await repo.get_user(login.org_id, login.user_id)
    assert user is not None
    await repo.mark_refresh_token_used(stored.token_hash, now)
    await repo.touch_session(login.id, now)
    return await _tokens(runtime, repo, user, login)


# --- logout --------------------------------------------------------------------------


async def logout(
    runtime: Runtime,
    *,
    access_token: str | None,
    refresh_token: str | None,
    meta: RequestMeta,
) -> None:
    """End the session of an access token or, without one, of a refresh token."""
    async with own_transaction(runtime, **meta) as step:
        repo = IdentityRepository(step.session)
        session_id: str | None = None
        if access_token is not None:
            claims = await verifier_of(runtime).verify(access_token)
            session_id = str(claims["sid"])
        elif refresh_token is not None:
            stored = await repo.get_refresh_token(_hash_refresh(refresh_token))
            session_id = stored.session_id if stored is not None else None
        else:
            raise Unauthorized("Send a bearer access token or the refresh token to log out.")
        login = None if session_id is None else await repo.get_session(session_id, for_update=True)
        if login is None:
            raise Unauthorized("Unknown session.")
        await _end_session(step, login, "logout", action="delete")


# --- the caller of an access token -------------------------------------------------


async def _signed_in(
    runtime: Runtime,
    repo: IdentityRepository,
    token: str | None,
    *,
    for_update: Literal["session", "user"],
) -> tuple[dict[str, Any], StoredSession, StoredUser]:
    """The claims, open session and user of a bearer access token, the session or the
    user locked for the change the caller makes; `Unauthorized` otherwise."""
    if token is None:
        raise Unauthorized("Send your access token as `Authorization: Bearer <token>`.")
    claims = await verifier_of(runtime).verify(token)
    login = await repo.get_session(str(claims["sid"]), for_update=for_update == "session")
    if login is None or login.revoked_at is not None:
        raise Unauthorized("The session of this access token has ended.")
    user = await repo.get_user(
        str(claims["org"]), str(claims["sub"]), for_update=for_update == "user"
    )
    if user is None or user.id != login.user_id:
        raise Unauthorized("The user of this access token no longer exists.")
    return claims, login, user


# --- MFA -----------------------------------------------------------------------------


async def enroll_mfa(runtime: Runtime, access_token: str | None, *, meta: RequestMeta) -> MfaSecret:
    """Start TOTP enrollment for the token's user: the secret to add to an authenticator."""
    settings = settings_of(runtime)
    async with own_transaction(runtime, **meta) as step:
        repo = IdentityRepository(step.session)
        _, _, user = await _signed_in(runtime, repo, access_token, for_update="user")
        if user.totp_enabled:
            raise Conflict("Two-step verification is already active for this account.")
        async with _mfa_step(step, user, "mfa enrollment started"):
            secret = totp.new_secret()
            sealed = await field_cipher_of(runtime).seal_field(
                step.session, totp.to_base32(secret), **_totp_where(user)
            )
            await repo.set_totp(
                user.id, secret_ct=sealed, enabled=False, last_step=None, now=runtime.clock.now()
            )
    return MfaSecret(
        secret=totp.to_base32(secret),
        otpauth_uri=totp.provisioning_uri(secret, account=user.email, issuer=settings.totp_issuer),
    )


async def verify_mfa(
    runtime: Runtime, access_token: str | None, code: str, *, meta: RequestMeta
) -> bool | Failure:
    """Confirm enrollment with a current code; from then on login needs a code too.
    True once active; a wrong code's refusal is committed to the audit trail."""
    async with own_transaction(runtime, **meta) as step:
        return await _verify_mfa(step, access_token, code)


async def _verify_mfa(step: StepContext, access_token: str | None, code: str) -> bool | Failure:
    runtime, repo = step.runtime, IdentityRepository(step.session)
    _, _, user = await _signed_in(runtime, repo, access_token, for_update="user")
    if user.totp_enabled:
        raise Conflict("Two-step verification is already active for this account.")
    secret = await _totp_secret(runtime, step.session, user)
    if secret is None:
        raise Conflict("Start with POST /auth/mfa/enroll.")
    now = runtime.clock.now()
    async with _mfa_step(step, user, "mfa activated") as entry:
        totp_step = totp.verify(secret, code, now, last_used_step=user.totp_last_step)
        if totp_step is None:
            entry.refuse("mfa verification failed")
            return Failure(InvalidOtp("The code does not match; check the device clock and retry."))
        await repo.set_totp(
            user.id, secret_ct=user.totp_secret_ct, enabled=True, last_step=totp_step, now=now
        )
    return True


# --- break-glass ---------------------------------------------------------------------

BREAK_GLASS_ROLE = "provider"
EMERGENCY_TREATMENT = "ETREAT"


async def break_glass(
    runtime: Runtime, token: str | None, ask: BreakGlassAsk, *, meta: RequestMeta
) -> BreakGlassIssued | Failure:
    """Emergency access: open one patient outside the caller's locations for a limited
    time (`break_glass_ttl_s`) with a typed reason. Audited (purpose `ETREAT`) and
    announced as an alert event; refusals are committed to the audit trail too."""
    async with own_transaction(runtime, **meta) as step:
        return await _break_glass(step, token, ask)


async def _break_glass(
    step: StepContext, token: str | None, body: BreakGlassAsk
) -> BreakGlassIssued | Failure:
    """The grant, audited as the signed-in user's emergency act (`ETREAT`)."""
    repo = IdentityRepository(step.session)
    claims, login, user = await _signed_in(step.runtime, repo, token, for_update="session")
    who = Principal(
        actor_id=user.id,
        actor_type=_kind(user),
        org_id=user.org_id,
        purpose_of_use=EMERGENCY_TREATMENT,
    )
    entry = identity_entry("create", "BreakGlass", detail=f"reason_code={body.reason_code}")
    entry.patient_id = body.patient_id
    async with step.audited(who, entry):
        return await _grant_break_glass(step, entry, claims, login, user, body)


async def _grant_break_glass(
    step: StepContext,
    entry: AuditEntry,
    claims: dict[str, Any],
    login: StoredSession,
    user: StoredUser,
    body: BreakGlassAsk,
) -> BreakGlassIssued | Failure:
    runtime, session, repo = step.runtime, step.session, IdentityRepository(step.session)
    now = runtime.clock.now()
    grant_id = str(uuid4())

    token_roles = claims.get("roles")
    if (
        BREAK_GLASS_ROLE not in user.roles
        or "patient" in user.roles
        or not isinstance(token_roles, list)
        or BREAK_GLASS_ROLE not in token_roles
    ):
        entry.refuse(f"403 not a provider; reason_code={body.reason_code}")
        return Failure(Forbidden("Only a provider may use emergency access (break-glass)."))
    if "otp" not in login.amr:
        entry.refuse(f"403 no one-time code; reason_code={body.reason_code}")
        return Failure(
            Forbidden(
                "multi-factor authentication required: sign in again with a one-time code "
                "before using emergency access."
            )
        )
    active = await repo.active_break_glass_grants(login.id, now)
    if len(active) >= MAX_BREAK_GLASS_GRANTS:
        entry.refuse(f"409 too many active grants; reason_code={body.reason_code}")
        return Failure(
            Conflict(
                f"This session already holds {len(active)} active emergency-access grants; "
                "sign in again or wait for one to expire."
            )
        )
    reason_ct = await field_cipher_of(runtime).seal_field(
        session,
        body.reason,
        org_id=user.org_id,
        table="break_glass_grant",
        column="reason_ct",
        row_id=grant_id,
    )
    stored = await repo.add_break_glass_grant(
        StoredBreakGlassGrant(
            id=grant_id,
            org_id=user.org_id,
            user_id=user.id,
            session_id=login.id,
            patient_id=body.patient_id,
            reason_code=body.reason_code,
            reason_ct=reason_ct,
            granted_at=now,
            expires_at=now + timedelta(seconds=settings_of(runtime).break_glass_ttl_s),
        )
    )
    await runtime.outbox.add(
        session,
        # The alert names the grant but never its session nor the (sealed) reason text.
        BreakGlassGranted(
            grant_id=stored.id, **values_of(stored, leave_out=("id", "session_id", "reason_ct"))
        ),
        org_id=stored.org_id,
    )
    entry.resource_id = stored.id
    signer = signer_of(runtime)
    return BreakGlassIssued(
        grant_id=stored.id,
        patient_id=stored.patient_id,
        reason_code=body.reason_code,
        granted_at=stored.granted_at,
        expires_at=stored.expires_at,
        access_token=await signer.issue(_grant(user, login, [*active, stored])),
        expires_in=int(signer.ttl.total_seconds()),
    )
