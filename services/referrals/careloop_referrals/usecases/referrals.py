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
from careloop_kit.auth.permissions import CLINICAL, DEMOGRAPHICS
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden, NotFound
from careloop_kit.repository import new_id
from careloop_referrals.domain.authorization import Authorization
from careloop_referrals.domain.loop_closure import LoopClosure, ReferralHistory, loop_closure_by
from careloop_referrals.domain.outcome import OutcomeReport
from careloop_referrals.domain.packet import InvalidPacket, PacketDocument, checked_packet
from careloop_referrals.domain.referral import (
    Direction,
    InvalidTransition,
    ReasonRequired,
    Referral,
    ReferralRequest,
    Stage,
    Transition,
    receive,
)
from careloop_referrals.store.documents import StoredDocument
from careloop_referrals.store.referrals import StaleReferral
from careloop_referrals.store.repository import Repositories
from careloop_referrals.usecases.clocks import restart_clock
from careloop_referrals.usecases.common import (
    InvalidReferral,
    ReferralChanged,
    TransitionRefused,
    field_cipher,
    open_text,
    seal_reason,
    settings_of,
)
from careloop_referrals.usecases.events import event_fields, routing
from careloop_referrals.usecases.leakage import watch_leakage
from careloop_referrals.usecases.moves import take_step

RESOURCE = "ServiceRequest"
DOCUMENT_TABLE = "referral_document"
READ, CREATE, UPDATE = "referrals:read", "referrals:create", "referrals:update"

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class HistoryStep:
    transition: Transition
    reason: str | None
    """None when the caller may not see clinical content, or when no reason was given."""


@dataclass(frozen=True)
class AuthorizationView:
    authorization: Authorization
    number: str | None
    """None when none was recorded, or the caller may not see who covers the patient."""


@dataclass(frozen=True)
class OutcomeView:
    report: OutcomeReport
    note: str | None
    """None when the caller may not see clinical content."""


@dataclass(frozen=True)
class DocumentView:
    document: StoredDocument
    filename: str | None
    """None when none was given, or the caller may not see clinical content."""


@dataclass(frozen=True)
class ReferralView:
    referral: Referral
    reason: str | None
    history: tuple[HistoryStep, ...]
    withheld_clinical: bool
    authorization: AuthorizationView | None = None
    withheld_coverage: bool = False
    outcome: OutcomeView | None = None
    documents: tuple[DocumentView, ...] = ()


def _missing(referral_id: str) -> str:
    # Another tenant's referral is indistinguishable from a missing one.
    return f"No referral {referral_id} in this organization."


def sees_clinical(ctx: Context, permission: str) -> bool:
    return CLINICAL in visible_categories(ctx.principal, permission)


def _sees_coverage(ctx: Context, permission: str) -> bool:
    # The authorization number identifies the patient's health plan membership: shown
    # to whoever may see who the patient is, which the front desk handling payers does.
    return DEMOGRAPHICS in visible_categories(ctx.principal, permission)


def _check(ctx: Context) -> Callable[[Referral], object]:
    def check(found: Referral) -> object:
        return ctx.principal.can_access_patient(
            found.patient_id, found.location_id, org_id=found.org_id
        )

    return check


async def create_referral(
    ctx: Context,
    request: ReferralRequest,
    *,
    reason: str | None,
    source: str,
    packet: Sequence[PacketDocument] = (),
) -> ReferralView:
    """Open a referral in `received` at a location in the caller's scope, with the
    documents of its `packet` sealed beside it; `ReferralReceived`."""
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
        if packet:
            try:
                checked_packet(packet, max_bytes=settings_of(ctx.runtime).max_document_bytes)
            except InvalidPacket as exc:
                raise InvalidReferral(str(exc)) from exc
        now = ctx.runtime.clock.now()
        referral, opened = receive(
            request, id=new_id(), org_id=principal.org_id, actor=principal.actor_id, now=now
        )
        entry.resource_id = referral.id
        reason_ct = await seal_reason(
            ctx.runtime,
            ctx.session,
            reason,
            org_id=referral.org_id,
            table="referral",
            row_id=referral.id,
        )
        await ctx.repos.referrals.add(
            referral, opened, source=source, reason_ct=reason_ct, transition_id=new_id()
        )
        documents = [await _store_document(ctx, referral, d, now=now) for d in packet]
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
        await watch_leakage(ctx.runtime, ctx.session, referral)
    shown = sees_clinical(ctx, CREATE)
    step = HistoryStep(opened, None)
    said = reason.strip() if shown and reason else None
    listed = tuple(
        DocumentView(d, p.filename if shown else None)
        for d, p in zip(documents, packet, strict=True)
    )
    return ReferralView(referral, said, (step,), not shown, documents=listed)


async def _store_document(
    ctx: Context, referral: Referral, document: PacketDocument, *, now: datetime
) -> StoredDocument:
    document_id = new_id()
    cipher = field_cipher(ctx.runtime)
    where = {"org_id": referral.org_id, "table": DOCUMENT_TABLE, "row_id": document_id}
    filename_ct = None
    if document.filename:
        filename_ct = await cipher.seal_field(
            ctx.session, document.filename, column="filename", **where
        )
    stored = StoredDocument(
        id=document_id,
        referral_id=referral.id,
        content_type=document.content_type,
        size_bytes=len(document.data),
        filename_ct=filename_ct,
        created_at=now,
        created_by=ctx.principal.actor_id,
    )
    content_ct = await cipher.seal_bytes(ctx.session, document.data, column="content", **where)
    await ctx.repos.documents.add(stored, org_id=referral.org_id, content_ct=content_ct)
    return stored


def opened_referral(
    ctx: Context, referral_id: str, action: str
) -> AbstractAsyncContextManager[Referral]:
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
    async with opened_referral(ctx, referral_id, "read") as found:
        return await referral_view(ctx, found, READ)


async def referral_view(ctx: Context, found: Referral, permission: str) -> ReferralView:
    """The referral as the caller may see it through `permission`: its reasons only
    with clinical access, the authorization number only with access to who the patient
    is."""
    shown = sees_clinical(ctx, permission)
    stored = await ctx.repos.referrals.transitions(found.org_id, found.id)
    details = await ctx.repos.referrals.details(found.org_id, found.id)
    reason = (
        await _opened(ctx, details.reason_ct, "referral", "reason", found.id) if shown else None
    )
    steps = [
        HistoryStep(
            s.transition,
            await _opened(ctx, s.reason_ct, "referral_transition", "reason", s.id)
            if shown
            else None,
        )
        for s in stored
    ]
    coverage = _sees_coverage(ctx, permission)
    authorization = None
    if details.authorization is not None:
        number = await _opened(
            ctx,
            details.number_ct if coverage else None,
            "referral_authorization",
            "number",
            found.id,
        )
        authorization = AuthorizationView(details.authorization, number)
    outcome = None
    if details.outcome is not None:
        note = await _opened(
            ctx, details.note_ct if shown else None, "referral_outcome", "note", found.id
        )
        outcome = OutcomeView(details.outcome, note)
    return ReferralView(
        found,
        reason,
        tuple(steps),
        not shown,
        authorization=authorization,
        withheld_coverage=authorization is not None and not coverage,
        outcome=outcome,
        documents=await _documents_view(ctx, found, shown=shown),
    )


async def _documents_view(
    ctx: Context, found: Referral, *, shown: bool
) -> tuple[DocumentView, ...]:
    listed = []
    for stored in await ctx.repos.documents.of_referral(found.org_id, found.id):
        filename = await _opened(
            ctx, stored.filename_ct if shown else None, DOCUMENT_TABLE, "filename", stored.id
        )
        listed.append(DocumentView(stored, filename))
    return tuple(listed)


async def read_document(
    ctx: Context, referral_id: str, document_id: str
) -> tuple[StoredDocument, bytes]:
    """One packet document's content, for callers who see clinical content; audited as a
    read of the referral."""
    async with opened_referral(ctx, referral_id, "read") as found:
        if not sees_clinical(ctx, READ):
            raise Forbidden("Packet documents are clinical: your role does not see them.")
        held = await ctx.repos.documents.content_of(found.org_id, found.id, document_id)
        if held is None:
            raise NotFound(f"No document {document_id} on referral {referral_id}.")
        stored, content_ct = held
        content = await field_cipher(ctx.runtime).open_bytes(
            ctx.session,
            content_ct,
            org_id=found.org_id,
            table=DOCUMENT_TABLE,
            column="content",
            row_id=stored.id,
        )
        return stored, content


async def _opened(
    ctx: Context, blob: bytes | None, table: str, column: str, row_id: str
) -> str | None:
    return await open_text(
        ctx.runtime,
        ctx.session,
        blob,
        org_id=ctx.principal.org_id,
        table=table,
        column=column,
        row_id=row_id,
    )


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
    async with opened_referral(ctx, referral_id, "update") as current:
        if expected_version is not None and expected_version != current.version:
            raise ReferralChanged(
                f"The referral is at version {current.version} ({current.stage}), not "
                f"{expected_version}: read it again and decide on its current stage.",
                current_version=current.version,
                current_stage=current.stage.value,
            )
        try:
            moved = await take_step(
                ctx.runtime,
                ctx.session,
                current,
                to,
                actor=ctx.principal.actor_id,
                reason=reason,
                appointment_id=appointment_id,
            )
        except InvalidTransition as exc:
            raise TransitionRefused(
                str(exc), current_stage=exc.current.value, allowed_next=sorted(exc.allowed)
            ) from exc
        except ReasonRequired as exc:
            raise InvalidReferral(str(exc)) from exc
        except StaleReferral as exc:
            raise ReferralChanged(
                "Another change to this referral was saved first: read it again.",
            ) from exc
        return await referral_view(ctx, moved, UPDATE)


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
