"""Staff and patients reading gaps, and staff deciding on one by hand (decline, exclude,
reopen).

Every read and change is audited in the request's transaction (the kit's
`RequestContext.audited` / `opened`): a gap names a measure, so it is clinical. The door
checked the permission; here the object is authorized: another organization's gap is a
404; staff see gaps attributed to locations in their scope, and a sensitive location's
gaps only when their scope names that location (an org-wide scope does not); a patient
account sees only its own gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from careloop_caregaps.domain import gap as lifecycle
from careloop_caregaps.domain.gap import Change, Gap, GapNotChangeable
from careloop_caregaps.store.gaps import StaleGap, StoredGap
from careloop_caregaps.store.repository import Repositories
from careloop_caregaps.usecases.changes import keep_change, opened_gap
from careloop_caregaps.usecases.common import (
    RESOURCE,
    GapNotChangeableProblem,
    InvalidGapRequest,
    field_cipher,
)
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.context import RequestContext
from careloop_kit.problems import Conflict, Forbidden

Context = RequestContext[Repositories]

SENSITIVE_REFUSAL = (
    "This gap is attributed to a sensitive location: only staff scoped to that location see it."
)


@dataclass(frozen=True)
class Transition:
    from_status: str | None
    to_status: str
    cause: str | None
    actor_id: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class GapView:
    gap: Gap
    history: tuple[Transition, ...]


def reason_row(gap_id: str, version: int) -> str:
    """What a reason's ciphertext is bound to: the transition to that gap version."""
    return f"{gap_id}@{version}"


def entry(action: str, resource_id: str | None = None) -> AuditEntry:
    return AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=[CLINICAL], resource_id=resource_id
    )


async def hidden_locations(ctx: Context) -> frozenset[str]:
    """The sensitive locations whose gaps this caller may not see."""
    principal = ctx.principal
    if principal.is_patient:
        return frozenset()
    sensitive = await ctx.repos.locations.sensitive_ids(principal.org_id)
    return frozenset(loc for loc in sensitive if loc not in principal.locations)


def _check(principal: AuthenticatedPrincipal, hidden: frozenset[str]) -> Callable[[Gap], object]:
    def check(found: Gap) -> object:
        if principal.is_patient:
            if found.patient_id != principal.patient_id:
                raise Forbidden("A patient account may only access its own record.")
            return True
        principal.can_access_location(found.location_id)
        if found.location_id in hidden:
            raise Forbidden(SENSITIVE_REFUSAL)
        return True

    return check


async def _load(ctx: Context, gap_id: str, *, for_update: bool) -> Gap | None:
    stored: StoredGap | None = await ctx.repos.gaps.get(
        ctx.principal.org_id, gap_id, for_update=for_update
    )
    return None if stored is None else await opened_gap(ctx.runtime, ctx.session, stored)


async def _history(ctx: Context, found: Gap) -> tuple[Transition, ...]:
    cipher = field_cipher(ctx.runtime)
    history = []
    for t in await ctx.repos.gaps.transitions(found.org_id, found.id):
        reason = None
        if t.reason_ct is not None:
            reason = await cipher.open_field(
                ctx.session,
                t.reason_ct,
                org_id=found.org_id,
                table="gap_transition",
                column="reason",
                row_id=reason_row(found.id, t.gap_version),
            )
        history.append(Transition(t.from_status, t.to_status, t.cause, t.actor_id, reason, t.at))
    return tuple(history)


async def read_gap(ctx: Context, gap_id: str) -> GapView:
    """One gap with its evidence fact ids and its history."""
    hidden = await hidden_locations(ctx)
    async with ctx.opened(
        entry("read", gap_id),
        _load(ctx, gap_id, for_update=False),
        missing=f"No gap {gap_id} in this organization.",
        patient_of=lambda g: g.patient_id,
        check=_check(ctx.principal, hidden),
    ) as found:
        return GapView(found, await _history(ctx, found))


async def patient_gaps(ctx: Context, patient_id: str) -> list[Gap]:
    """The patient's gaps the caller may see, every care cycle, current first per measure."""
    principal = ctx.principal
    audit = entry("read")
    audit.patient_id = patient_id
    async with ctx.audited(audit):
        own, locations = principal.listing_scope(patient_id)
        if own != patient_id:  # a patient account without a record
            raise Forbidden("A patient account may only access its own record.")
        hidden = await hidden_locations(ctx)
        found = []
        for stored in await ctx.repos.gaps.of_patient(principal.org_id, patient_id):
            location = stored.gap.location_id
            if locations is not None and location not in locations:
                continue
            if location in hidden:
                continue
            found.append(await opened_gap(ctx.runtime, ctx.session, stored))
        return found


def _apply(step: Callable[[], Change]) -> Change:
    try:
        return step()
    except GapNotChangeable as exc:
        raise GapNotChangeableProblem(str(exc), current_status=exc.status) from exc


async def _decide(
    ctx: Context, gap_id: str, step: Callable[[Gap], Change], reason: str | None
) -> GapView:
    hidden = await hidden_locations(ctx)
    async with ctx.opened(
        entry("update", gap_id),
        _load(ctx, gap_id, for_update=True),
        missing=f"No gap {gap_id} in this organization.",
        patient_of=lambda g: g.patient_id,
        check=_check(ctx.principal, hidden),
    ) as current:
        if ctx.principal.is_patient:
            raise Forbidden("Gaps are decided on by staff.")
        change = _apply(lambda: step(current))
        reason_ct = None
        if reason is not None:
            text = reason.strip()
            if not text:
                raise InvalidGapRequest("Give the reason for the decision.")
            reason_ct = await field_cipher(ctx.runtime).seal_field(
                ctx.session,
                text,
                org_id=current.org_id,
                table="gap_transition",
                column="reason",
                row_id=reason_row(current.id, change.gap.version),
            )
        try:
            await keep_change(
                ctx.runtime,
                ctx.session,
                change,
                actor_id=ctx.principal.actor_id,
                reason_ct=reason_ct,
            )
        except StaleGap as exc:
            raise Conflict("Another change to this gap was saved first: read it again.") from exc
        return GapView(change.gap, await _history(ctx, change.gap))


async def decline_gap(ctx: Context, gap_id: str, reason: str) -> GapView:
    now = ctx.runtime.clock.now()
    return await _decide(ctx, gap_id, lambda g: lifecycle.decline(g, now), reason)


async def exclude_gap(ctx: Context, gap_id: str, reason: str) -> GapView:
    now = ctx.runtime.clock.now()
    return await _decide(ctx, gap_id, lambda g: lifecycle.exclude(g, now), reason)


async def reopen_gap(ctx: Context, gap_id: str) -> GapView:
    now = ctx.runtime.clock.now()
    return await _decide(ctx, gap_id, lambda g: lifecycle.reopen(g, now), None)
