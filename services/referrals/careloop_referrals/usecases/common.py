"""What every use case shares: the service's settings on the runtime, the port to its
encrypted fields, and the problems it answers with."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.fields import FieldCipher, cached_field_cipher
from careloop_kit.problems import Conflict, ProblemError
from careloop_kit.service import Runtime
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.store.tables import field_key

SETTINGS_KEY = "referrals_settings"


class InvalidReferral(ProblemError):
    status, title, slug = 422, "Invalid referral request", "invalid-referral"


class TransitionRefused(Conflict):
    """The stage does not allow the step; the problem's `allowed_next` says what does."""

    title, slug = "Transition not allowed", "transition-not-allowed"


class ReferralChanged(Conflict):
    title, slug = "Referral changed", "referral-changed"


def settings_of(runtime: Runtime) -> ReferralsSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: ReferralsSettings = runtime.state[SETTINGS_KEY]
    return settings


def field_cipher(runtime: Runtime) -> FieldCipher:
    """The port of referrals' encrypted fields (reasons), made once per runtime."""
    return cached_field_cipher(runtime, settings_of(runtime).fields_transit_key, field_key)


class OutcomeConflict(Conflict):
    title, slug = "Outcome report not accepted", "outcome-conflict"


class AuthorizationConflict(Conflict):
    title, slug = "Authorization not recorded", "authorization-conflict"


async def seal_reason(
    runtime: Runtime,
    session: AsyncSession,
    text: str | None,
    *,
    org_id: str,
    table: str,
    row_id: str,
) -> bytes | None:
    """A referral's or a transition's free-text reason, sealed for its row; a blank
    reason is no reason."""
    if text is None or not text.strip():
        return None
    return await field_cipher(runtime).seal_field(
        session, text.strip(), org_id=org_id, table=table, column="reason", row_id=row_id
    )


async def open_text(
    runtime: Runtime,
    session: AsyncSession,
    blob: bytes | None,
    *,
    org_id: str,
    table: str,
    column: str,
    row_id: str,
) -> str | None:
    """A sealed text column of a row, opened (None stays None)."""
    if blob is None:
        return None
    return await field_cipher(runtime).open_field(
        session, blob, org_id=org_id, table=table, column=column, row_id=row_id
    )


async def open_reason(
    runtime: Runtime,
    session: AsyncSession,
    blob: bytes | None,
    *,
    org_id: str,
    table: str,
    row_id: str,
) -> str | None:
    return await open_text(
        runtime, session, blob, org_id=org_id, table=table, column="reason", row_id=row_id
    )
