"""Referrals: create, list, read, move through the loop, and the loop-closure figures.

Each route requires its permission from the permission table first (`require`, MFA
included); the use case (`usecases/referrals.py`) authorizes the object and audits the
call; the response leaves out the clinical reason for callers who may not see it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import AwareDatetime

from careloop_kit.api_types import IdStr, PageLimit
from careloop_kit.auth.permissions import CLINICAL, DEMOGRAPHICS
from careloop_referrals.api.common import CreateContext, ReadContext, UpdateContext
from careloop_referrals.api.schemas import (
    AuthorizationRead,
    AuthorizationWrite,
    DocumentRead,
    LoopClosureRead,
    LoopClosureReport,
    OutcomeRead,
    OutcomeWrite,
    ReferralCreate,
    ReferralPacketCreate,
    ReferralPage,
    ReferralRead,
    ReferralSummary,
    TransitionCreate,
    TransitionRead,
)
from careloop_referrals.domain.authorization import AuthorizationDecision
from careloop_referrals.domain.packet import ACCEPTED_TYPES, PacketDocument
from careloop_referrals.domain.referral import (
    FHIR_TASK_STATUS,
    Direction,
    ReferralRequest,
    Stage,
    allowed_next,
)
from careloop_referrals.usecases import authorizations, outcomes
from careloop_referrals.usecases import referrals as steps
from careloop_referrals.usecases.referrals import AuthorizationView, ReferralFilter, ReferralView

router = APIRouter(prefix="/referrals", tags=["referrals"])


def _read(view: ReferralView) -> ReferralRead:
    r = view.referral
    return ReferralRead(
        **ReferralSummary.model_validate(r).model_dump(),
        org_id=r.org_id,
        referring_provider_id=r.referring_provider_id,
        receiving_provider_id=r.receiving_provider_id,
        task_status=FHIR_TASK_STATUS[r.stage],
        allowed_next=sorted(allowed_next(r.stage)),
        reason=view.reason,
        history=[
            TransitionRead(**{**asdict(s.transition), "reason": s.reason}) for s in view.history
        ],
        authorization=_authorization(view.authorization),
        documents=[
            DocumentRead(**{**asdict(d.document), "filename": d.filename}) for d in view.documents
        ],
        outcome=None
        if view.outcome is None
        else OutcomeRead(**{**asdict(view.outcome.report), "note": view.outcome.note}),
        withheld_categories=[
            category
            for category, withheld in (
                (DEMOGRAPHICS, view.withheld_coverage),
                (CLINICAL, view.withheld_clinical),
            )
            if withheld
        ],
    )


def _authorization(view: AuthorizationView | None) -> AuthorizationRead | None:
    if view is None:
        return None
    a = view.authorization
    return AuthorizationRead(
        **{**asdict(a), "number": view.number, "visits_left": a.visits_left},
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ReferralRead)
async def create_referral(body: ReferralCreate, ctx: CreateContext) -> ReferralRead:
    """Create a referral (it starts in `received`)."""
    source = "partner" if ctx.principal.actor_type == "partner" else "staff"
    request = ReferralRequest(**body.model_dump(exclude={"reason"}))
    view = await steps.create_referral(ctx, request, reason=body.reason, source=source)
    return _read(view)


@router.post("/packets", status_code=status.HTTP_201_CREATED, response_model=ReferralRead)
async def create_referral_from_packet(
    body: ReferralPacketCreate, ctx: CreateContext
) -> ReferralRead:
    """Create a referral with its packet: the referral letter, notes, results or images
    that came with it, stored encrypted (it starts in `received`)."""
    packet = [
        PacketDocument(content_type=d.content_type, data=d.data, filename=d.filename)
        for d in body.documents
    ]
    request = ReferralRequest(**body.model_dump(exclude={"reason", "documents"}))
    view = await steps.create_referral(
        ctx, request, reason=body.reason, source="packet", packet=packet
    )
    return _read(view)


@router.get("", response_model=ReferralPage)
async def list_referrals(
    ctx: ReadContext,
    patient_id: IdStr | None = None,
    location_id: IdStr | None = None,
    stage: Annotated[list[Stage] | None, Query()] = None,
    direction: Direction | None = None,
    after: IdStr | None = None,
    limit: PageLimit = 50,
) -> ReferralPage:
    """List referrals in your scope, in id order (repeat `stage` to ask for several)."""
    found, next_after = await steps.list_referrals(
        ctx,
        ReferralFilter(
            patient_id=patient_id,
            location_id=location_id,
            stages=tuple(stage or ()),
            direction=direction,
            after=after,
            limit=limit,
        ),
    )
    items = [ReferralSummary.model_validate(r) for r in found]
    return ReferralPage(items=items, next_after=next_after)


@router.get("/figures", response_model=LoopClosureReport)
async def loop_closure_figures(
    ctx: ReadContext,
    created_from: Annotated[AwareDatetime, Query(alias="from")],
    created_to: Annotated[AwareDatetime, Query(alias="to")],
    group_by: Literal["location", "referring_provider", "month"] = "location",
    location_id: IdStr | None = None,
) -> LoopClosureReport:
    """Loop closure of the referrals created in [from, to): share closed and median days
    to scheduled, seen and reported, per location, referring provider or month."""
    figures = await steps.loop_closure_figures(
        ctx,
        created_from=created_from,
        created_to=created_to,
        group_by=group_by,
        location_id=location_id,
    )
    return LoopClosureReport(
        created_from=created_from,
        created_to=created_to,
        group_by=group_by,
        groups=[
            LoopClosureRead(group=str(group), share_closed=f.share_closed, **asdict(f))
            for group, f in figures
        ],
    )


@router.get("/{referral_id}", response_model=ReferralRead)
async def read_referral(referral_id: IdStr, ctx: ReadContext) -> ReferralRead:
    """Read one referral with its history."""
    return _read(await steps.read_referral(ctx, referral_id))


@router.post("/{referral_id}/transitions", response_model=ReferralRead)
async def move_referral(
    referral_id: IdStr, body: TransitionCreate, ctx: UpdateContext
) -> ReferralRead:
    """Move a referral to its next stage; 409 names the allowed next stages."""
    view = await steps.move_referral(
        ctx,
        referral_id,
        to=body.to,
        reason=body.reason,
        appointment_id=body.appointment_id,
        expected_version=body.version,
    )
    return _read(view)


@router.put("/{referral_id}/authorization", response_model=ReferralRead)
async def record_authorization(
    referral_id: IdStr, body: AuthorizationWrite, ctx: UpdateContext
) -> ReferralRead:
    """Record the request to the payer or its answer; a referral waiting on it moves
    (409 names why when its stage takes no such answer)."""
    decision = AuthorizationDecision(
        **body.model_dump(include={"payer", "status", "approved_visits", "expires_at"})
    )
    view = await authorizations.record_authorization(
        ctx,
        referral_id,
        decision,
        number=body.number,
        reason=body.reason,
        expected_version=body.version,
    )
    return _read(view)


@router.post(
    "/{referral_id}/outcome", status_code=status.HTTP_202_ACCEPTED, response_model=ReferralRead
)
async def write_outcome(referral_id: IdStr, body: OutcomeWrite, ctx: UpdateContext) -> ReferralRead:
    """Write the outcome of a seen inbound referral: it is sent to the referring provider
    by their preferred channel, and the referral is closed once the channel accepts it
    (`outcome.status` says where it is). A failed report may be written again."""
    return _read(await outcomes.write_outcome(ctx, referral_id, body.note))


@router.get(
    "/{referral_id}/documents/{document_id}",
    response_class=Response,
    responses={200: {"content": {t: {} for t in sorted(ACCEPTED_TYPES)}}},
)
async def read_document(referral_id: IdStr, document_id: IdStr, ctx: ReadContext) -> Response:
    """One document of the referral's packet, as it was uploaded (clinical: for roles
    that see clinical content)."""
    stored, content = await steps.read_document(ctx, referral_id, document_id)
    return Response(
        content,
        media_type=stored.content_type,
        # Never rendered inline by a browser from our origin, never cached on the way.
        headers={"Content-Disposition": "attachment", "Cache-Control": "no-store"},
    )
