"""Prior authorization of a referral: the payer's answer, how many visits it covers, until
when, and how many of them the patient has used.

A referral has at most one authorization record, changed in place and versioned like
the referral. Recording the payer's answer moves a referral that waits on it: a request
from `triaged` (or a resubmission after a denial) puts it in `authorization pending`;
an approval or a denial of a pending referral moves it to `authorized` / `denied`. In
any other open stage (an extension asked for while the visit is booked) the record
changes and the stage stays. A finished referral takes no authorization.

Visits are counted from the appointments linked to the referral, once per appointment,
when the patient arrives. The coordinator hears about an authorization before it runs
out: `reminder_at` is the expiry less the configured lead, and `used_up` says when the
visits approved are all used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from careloop_referrals.domain.referral import Referral, Stage


class AuthorizationStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    DENIED = "denied"


class AuthorizationRefused(Exception):
    """The payer's answer cannot be recorded on this referral as it stands."""


@dataclass(frozen=True)
class AuthorizationDecision:
    """What the coordinator records from the payer. The authorization number is sealed
    apart (it identifies the patient's coverage) and so is not part of the record."""

    payer: str
    status: AuthorizationStatus
    approved_visits: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Authorization:
    referral_id: str
    org_id: str
    payer: str
    status: AuthorizationStatus
    approved_visits: int | None
    expires_at: datetime | None
    visits_used: int
    updated_at: datetime
    updated_by: str
    version: int = 1

    @property
    def visits_left(self) -> int | None:
        """Visits still covered; None when the payer set no count."""
        if self.approved_visits is None:
            return None
        return max(self.approved_visits - self.visits_used, 0)

    @property
    def used_up(self) -> bool:
        return self.status is AuthorizationStatus.APPROVED and self.visits_left == 0

    def reminder_at(self, lead: timedelta) -> datetime | None:
        """When to remind the coordinator that the approval runs out; None when there is
        nothing to run out (not approved, or no expiry)."""
        if self.status is not AuthorizationStatus.APPROVED or self.expires_at is None:
            return None
        return self.expires_at - lead


# The stage a pending-payer step moves the referral to, per answer and current stage.
_MOVES: dict[tuple[AuthorizationStatus, Stage], Stage] = {
    (AuthorizationStatus.REQUESTED, Stage.TRIAGED): Stage.AUTHORIZATION_PENDING,
    (AuthorizationStatus.REQUESTED, Stage.DENIED): Stage.AUTHORIZATION_PENDING,
    (AuthorizationStatus.APPROVED, Stage.AUTHORIZATION_PENDING): Stage.AUTHORIZED,
    (AuthorizationStatus.DENIED, Stage.AUTHORIZATION_PENDING): Stage.DENIED,
}

# Stages before the payer was asked: an approval or denial arriving there skips the
# request, which the loop's history would then not show.
_NOT_YET_ASKED = frozenset({Stage.RECEIVED, Stage.TRIAGED})


def record(
    referral: Referral,
    current: Authorization | None,
    decision: AuthorizationDecision,
    *,
    actor: str,
    now: datetime,
) -> tuple[Authorization, Stage | None]:
    """The authorization after the payer's answer, and the stage the referral moves to
    (None: it stays). Raises `AuthorizationRefused` with what to do instead."""
    if not referral.is_open:
        raise AuthorizationRefused(
            f"The referral is {referral.stage}: a finished referral takes no authorization."
        )
    if decision.status is not AuthorizationStatus.REQUESTED and referral.stage in _NOT_YET_ASKED:
        raise AuthorizationRefused(
            f"The referral is {referral.stage}: record the request to the payer "
            "(status `requested`) before its answer."
        )
    if decision.approved_visits is not None and decision.status is not AuthorizationStatus.APPROVED:
        raise AuthorizationRefused("Approved visits are recorded with an approval only.")
    if decision.expires_at is not None and decision.expires_at <= now:
        raise AuthorizationRefused("The authorization's expiry must be in the future.")
    if current is None:
        current = Authorization(
            referral_id=referral.id,
            org_id=referral.org_id,
            payer=decision.payer,
            status=decision.status,
            approved_visits=None,
            expires_at=None,
            visits_used=0,
            updated_at=now,
            updated_by=actor,
            version=0,
        )
    authorization = replace(
        current,
        payer=decision.payer,
        status=decision.status,
        approved_visits=decision.approved_visits,
        expires_at=decision.expires_at,
        updated_at=now,
        updated_by=actor,
        version=current.version + 1,
    )
    return authorization, _MOVES.get((decision.status, referral.stage))


def count_visit(authorization: Authorization, *, now: datetime) -> Authorization:
    """One more visit used (the caller counts each appointment once)."""
    return replace(
        authorization,
        visits_used=authorization.visits_used + 1,
        updated_at=now,
        version=authorization.version + 1,
    )
