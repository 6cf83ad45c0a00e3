"""Create, read, list and move referrals; the loop-closure figures.

Every step that touches a referral is audited in the request's transaction (the kit's
`RequestContext.audited` / `opened`): a referral names its patient, and its reason is
clinical. Authorization of the object happens here, after the door checked the
permission: another organization's referral is a 404, a location outside the caller's
scope a 403, a patient account reaches only its own referrals; break-glass reaches the
patient it names, audited as `ETREAT`.

A step is checked by the domain's state machine, then saved against the version it was
read at: of two concurrent steps on one referral exactly one wins, the other is a 409
naming the new stage.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop_contracts.referrals import ReferralReceived
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import visible_categories
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden
from careloop_kit.repository import new_id
from careloop_referrals.domain.loop_closure import LoopClosure, ReferralHistory, loop_closure_by
from careloop_referrals.domain.referral import (
    Direction,
    InvalidTransition,
    ReasonRequired,
    Referral,
    ReferralRequest,
    Stage,
    Transition,
    advance,
    receive,
)
from careloop_referrals.store.referrals import StaleReferral
from careloop_referrals.store.repository import Repositories
from careloop_referrals.usecases.clocks import restart_clock
from careloop_referrals.usecases.common import (
    InvalidReferral,
    ReferralChanged,
    TransitionRefused,
    field_cipher,
    settings_of,
)
from careloop_referrals.usecases.events import event_fields, publish_stage_change, routing

RESOURCE = "ServiceRequest"
READ, CREATE, UPDATE = "referrals:read", "referrals:create", "referrals:update"

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class HistoryStep:
    transition: Transition
    reason: str | None
    """None when the caller may not see clinical content, or when no reason was given."""


@dataclass(frozen=True)
class ReferralView:
    referral: Referral
    reason: str | None
    history: tuple[HistoryStep, ...]
    withheld_clinical: bool


def _missing(referral_id: str) -> str:
    # Another tenant's referral is indistinguishable from a missing one.
    return f"No referral {referral_id} in this organization."


def _sees_clinical(ctx: Context, permission: str) -> bool:
    return CLINICAL in visible_categories(ctx.principal, permission)


def _check(ctx: Context) -> Callable[[Referral], object]:
    def check(found: Referral) -> object:
        return ctx.principal.can_access_patient(
            found.patient_id, found.location_id, org_id=found.org_id
        )

    return check


async def _seal(
    ctx: Context, text: str | None, *, org_id: str, table: str, row_id: str
) -> bytes | None:
    if text is None or not text.strip():
        return None
    return await field_cipher(ctx.runtime).seal_field(
        ctx.session, text.strip(), org_id=org_id, table=table, column="reason", row_id=row_id
    )


async def _open(
    ctx: Context, blob: bytes | None, *, org_id: str, table: str, row_id: str
) -> str | None:
    if blob is None:
        return None
    return await field_cipher(ctx.runtime).open_field(
        ctx.session, blob, org_id=org_id, table=table, column="reason", row_id=row_id
    )


async def create_referral(
    ctx: Context, request: ReferralRequest, *, reason: str | None, source: str
) -> ReferralView:
    """Open a referral in `received` at a location in the caller's scope;
    `ReferralReceived`."""
    principal = ctx.principal
    entry = AuditEntry(
        action="create",
        resource_type=RESOURCE,
        phi_categories=[CLINICAL],
        patient_id=request.patient_id,
    )
    async with ctx.audited(entry):
        if principal.is_patient:
            raise Forbidden("A patient account cannot create referrals.")
        principal.can_access_location(request.location_id)
        providers = (request.referring_provider_id, request.receiving_provider_id)
        for provider_id in filter(None, providers):
            if await ctx.repos.directory.get(principal.org_id, provider_id) is None:
                raise InvalidReferral(
                    f"No directory entry {provider_id}: add the provider to the directory "
                    "first (POST /referrals/directory)."
                )
        now = ctx.runtime.clock.now()
        referral, opened = receive(
            request, id=new_id(), org_id=principal.org_id, actor=principal.actor_id, now=now
        )
        entry.resource_id = referral.id
        reason_ct = await _seal(
            ctx, reason, org_id=referral.org_id, table="referral", row_id=referral.id
        )
        await ctx.repos.referrals.add(
            referral, opened, source=source, reason_ct=reason_ct, transition_id=new_id()
        )
        await ctx.runtime.outbox.add(
            ctx.session,
            ReferralReceived(
                **event_fields(referral, now),
                referring_provider_id=referral.referring_provider_id,
                receiving_provider_id=referral.receiving_provider_id,
            ),
            **routing(referral),
        )
        await restart_clock(ctx.runtime, ctx.session, referral, left=None)
    shown = _sees_clinical(ctx, CREATE)
    step = HistoryStep(opened, None)
    return ReferralView(referral, reason.strip() if shown and reason else None, (step,), not shown)


def _opened(ctx: Context, referral_id: str, action: str) -> AbstractAsyncContextManager[Referral]:
    """The caller's referral inside one audited scope of `action`: 404 when it is not
    the organization's, its patient named in the trail, then the access check."""
    entry = AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=[CLINICAL], resource_id=referral_id
    )
    return ctx.opened(
        entry,
        ctx.repos.referrals.get(ctx.principal.org_id, referral_id),
        missing=_missing(referral_id),
        patient_of=lambda r: r.patient_id,
        check=_check(ctx),
    )


async def read_referral(ctx: Context, referral_id: str) -> ReferralView:
    """One referral with its history; reasons only for callers who see clinical data."""
    async with _opened(ctx, referral_id, "read") as found:
        return await _view(ctx, found, shown=_sees_clinical(ctx, READ))


async def _view(ctx: Context, found: Referral, *, shown: bool) -> ReferralView:
    stored = await ctx.repos.referrals.transitions(found.org_id, found.id)
    reason = None
    steps = []
    if shown:
        blob = await ctx.repos.referrals.reason_of(found.org_id, found.id)
        reason = await _open(ctx, blob, org_id=found.org_id, table="referral", row_id=found.id)
    for s in stored:
        said = (
            await _open(
                ctx, s.reason_ct, org_id=found.org_id, table="referral_transition", row_id=s.id
            )
            if shown
            else None
        )
        steps.append(HistoryStep(s.transition, said))
    return ReferralView(found, reason, tuple(steps), not shown)


async def move_referral(
    ctx: Context,
    referral_id: str,
    *,
    to: Stage,
    reason: str | None,
    appointment_id: str | None,
    expected_version: int | None,
) -> ReferralView:
    """One step of the loop; `TransitionRefused` (409, with `allowed_next`) when the
    stage does not allow it, `ReferralChanged` (409) when another step won."""
    org_id = ctx.principal.org_id
    async with _opened(ctx, referral_id, "update") as current:
        if expected_version is not None and expected_version != current.version:
            raise ReferralChanged(
                f"The referral is at version {current.version} ({current.stage}), not "
                f"{expected_version}: read it again and decide on its current stage.",
                current_version=current.version,
                current_stage=current.stage.value,
            )
        now = ctx.runtime.clock.now()
        try:
            moved, step = advance(
                current,
                to,
                actor=ctx.principal.actor_id,
                now=now,
                reason=reason,
                appointment_id=appointment_id,
            )
        except InvalidTransition as exc:
            raise TransitionRefused(
                str(exc), current_stage=exc.current.value, allowed_next=sorted(exc.allowed)
            ) from exc
        except ReasonRequired as exc:
            raise InvalidReferral(str(exc)) from exc
        transition_id = new_id()
        reason_ct = await _seal(
            ctx, reason, org_id=org_id, table="referral_transition", row_id=transition_id
        )
        try:
            await ctx.repos.referrals.save(
                moved,
                step,
                previous_version=current.version,
                transition_id=transition_id,
                reason_ct=reason_ct,
            )
        except StaleReferral as exc:
            raise ReferralChanged(
                "Another change to this referral was saved first: read it again.",
            ) from exc
        await publish_stage_change(ctx.runtime, ctx.session, moved, left=current)
        await restart_clock(ctx.runtime, ctx.session, moved, left=current)
        return await _view(ctx, moved, shown=_sees_clinical(ctx, UPDATE))


@dataclass(frozen=True)
class ReferralFilter:
    patient_id: str | None = None
    location_id: str | None = None
    stages: tuple[Stage, ...] = ()
    direction: Direction | None = None
    after: str | None = None
    limit: int = 50


async def list_referrals(ctx: Context, query: ReferralFilter) -> tuple[list[Referral], str | None]:
    """A page of referrals in the caller's scope (a patient account: its own), in id
    order after `query.after`, and the `after` of the next page (None: last). Every
    patient listed is named in the audit trail."""
    principal = ctx.principal
    patient_id, locations = principal.listing_scope(query.patient_id)
    if query.location_id is not None:
        principal.can_access_location(query.location_id)
        locations = (query.location_id,)
    size = min(query.limit, settings_of(ctx.runtime).max_page_size)
    entry = AuditEntry(action="query", resource_type=RESOURCE, phi_categories=[CLINICAL])
    async with ctx.audited(entry):
        found = await ctx.repos.referrals.page(
            principal.org_id,
            locations=locations,
            patient_id=patient_id,
            stages=query.stages,
            direction=query.direction,
            after=query.after,
            limit=size,
        )
        entry.disclose_patients(r.patient_id for r in found)
    return found, found[-1].id if len(found) == size else None


GROUPINGS: dict[str, Callable[[ReferralHistory], Hashable]] = {
    "location": lambda h: h.referral.location_id,
    "referring_provider": lambda h: h.referral.referring_provider_id,
    "month": lambda h: h.referral.created_at.strftime("%Y-%m"),
}


async def loop_closure_figures(
    ctx: Context,
    *,
    created_from: datetime,
    created_to: datetime,
    group_by: str,
    location_id: str | None,
) -> Sequence[tuple[Hashable, LoopClosure]]:
    """The figures of referrals created in [from, to) in the caller's scope, per group,
    in group order. Aggregates only: no patient is named, so nothing is disclosed."""
    principal = ctx.principal
    if principal.is_patient:
        raise Forbidden("Loop-closure figures are for staff.")
    if created_to <= created_from:
        raise InvalidReferral("`to` must be after `from`.")
    longest = settings_of(ctx.runtime).max_figures_days
    if created_to - created_from > timedelta(days=longest):
        raise InvalidReferral(f"One request covers at most {longest} days.")
    _, locations = principal.listing_scope(None)
    if location_id is not None:
        principal.can_access_location(location_id)
        locations = (location_id,)
    histories = await ctx.repos.referrals.histories(
        principal.org_id, created_from=created_from, created_to=created_to, locations=locations
    )
    figures = loop_closure_by(histories, GROUPINGS[group_by])
    return sorted(figures.items(), key=lambda item: str(item[0]))
