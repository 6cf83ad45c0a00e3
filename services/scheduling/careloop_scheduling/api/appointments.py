"""Book, read, list, cancel, reschedule, confirm, check in and mark no-shows.

Every call that touches an appointment is audited: an appointment ties a patient to a
provider, a time and a kind of visit, which is care information, so the trail files it
under the `clinical` PHI category (the breach-notice rules want the kind of PHI named).

Object checks on top of the permission: another tenant's appointment is a 404; staff
reach appointments of locations in their scope (403 otherwise); a patient account
reaches only its own appointments, at any location (self-scheduling, unless the
location's `self_scheduling` switch is off: 403). Appointments at a sensitive location
are reached only by staff whose scope names that location: an org-wide scope or other
locations are not enough (403 on direct access, left out of lists).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from careloop_contracts import AppointmentCancelled, AppointmentCheckedIn, AppointmentEvent
from careloop_kit.audit import AuditEntry, fingerprint_query
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.problems import Conflict, Forbidden
from careloop_scheduling.api.common import BookContext, Context, ReadContext, work_of
from careloop_scheduling.api.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentPage,
    AppointmentRead,
    AppointmentReschedule,
    RescheduleResult,
)
from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import Appointment, InvalidTransition
from careloop_scheduling.store.appointments import SlotTaken, StaleAppointment
from careloop_scheduling.usecases.booking import (
    apply_step,
    book,
    record_confirmation,
    reschedule_to,
)
from careloop_scheduling.usecases.common import InvalidScheduling
from careloop_scheduling.usecases.locations import check_reach, feature_on, hidden_locations
from careloop_scheduling.usecases.no_show import record_no_show

router = APIRouter(prefix="/appointments", tags=["appointments"])

RESOURCE = "Appointment"
PHI = [CLINICAL]
MAX_PAGE = 100


def appointment_read(a: Appointment) -> AppointmentRead:
    # The response carries the aggregate's fields one for one; a field added to both
    # needs no third edit here.
    return AppointmentRead.model_validate(a, from_attributes=True)


def audit_entry(action: str, appointment_id: str | None = None) -> AuditEntry:
    """The audit entry of an operation on appointments (the trail fills in the rest as
    the work learns it)."""
    return AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=PHI, resource_id=appointment_id
    )


@asynccontextmanager
async def _opened(
    ctx: Context, appointment_id: str, action: str, *, for_update: bool = True
) -> AsyncIterator[Appointment]:
    """The appointment in the caller's scope (404 / 403), inside one audited scope; the
    lifecycle's refusals inside it become 409s."""
    repos = ctx.repos
    async with ctx.opened(
        audit_entry(action, appointment_id),
        repos.appointments.get_appointment(
            ctx.principal.org_id, appointment_id, for_update=for_update
        ),
        missing=f"No appointment {appointment_id} in this organization.",
        patient_of=lambda a: a.patient_id,
        check=lambda a: check_reach(repos, ctx.principal, a.patient_id, a.location_id),
    ) as current:
        try:
            yield current
        except InvalidTransition as exc:
            raise Conflict(str(exc), current_status=current.status.value) from exc
        except StaleAppointment as exc:
            raise Conflict("The appointment changed meanwhile; read it again.") from exc
        except SlotTaken as exc:
            raise Conflict("That slot was just taken; choose another one.") from exc


async def _stepped(
    ctx: Context,
    appointment_id: str,
    change: Callable[[Appointment], Appointment],
    event: type[AppointmentEvent],
) -> AppointmentRead:
    """One lifecycle step (`apply_step`) on the appointment in the caller's scope."""
    async with _opened(ctx, appointment_id, "update") as current:
        changed = await apply_step(work_of(ctx), current, change, event)
    return appointment_read(changed)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AppointmentRead)
async def book_appointment(body: AppointmentCreate, ctx: BookContext) -> AppointmentRead:
    """Book an open slot for a patient."""
    principal, repos = ctx.principal, ctx.repos
    entry = audit_entry("create")
    entry.patient_id = body.patient_id
    async with ctx.audited(entry):
        await check_reach(repos, principal, body.patient_id, body.location_id)
        if principal.is_patient and not await feature_on(
            repos, principal.org_id, body.location_id, "self_scheduling"
        ):
            raise Forbidden(
                f"Self-scheduling is switched off at location {body.location_id}: "
                "the practice books visits there."
            )
        try:
            appt = await book(
                work_of(ctx),
                org_id=principal.org_id,
                patient_id=body.patient_id,
                provider_id=body.provider_id,
                location_id=body.location_id,
                type_id=body.appointment_type_id,
                start_at=body.start_at,
            )
        except SlotTaken as exc:
            raise Conflict("That slot was just taken; choose another one.") from exc
        entry.resource_id = appt.id
    return appointment_read(appt)


@router.get("/{appointment_id}", response_model=AppointmentRead)
async def read_appointment(appointment_id: str, ctx: ReadContext) -> AppointmentRead:
    """Read one appointment."""
    async with _opened(ctx, appointment_id, "read", for_update=False) as found:
        pass
    return appointment_read(found)


@router.get("", response_model=AppointmentPage)
async def list_appointments(
    ctx: ReadContext,
    patient_id: str | None = None,
    provider_id: str | None = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AppointmentPage:
    """List appointments by patient and/or provider and time range, within the caller's
    locations (a patient account: its own appointments only)."""
    principal, repos = ctx.principal, ctx.repos
    used = [
        k
        for k, v in (
            ("patient_id", patient_id),
            ("provider_id", provider_id),
            ("from", from_),
            ("to", to),
        )
        if v is not None
    ]
    entry = audit_entry("query")
    entry.query_fingerprint = fingerprint_query(used)
    async with ctx.audited(entry):
        patient_id, locations = principal.listing_scope(patient_id)
        if patient_id is None and provider_id is None:
            raise InvalidScheduling("Give patient_id or provider_id.")
        found = await repos.appointments.list_appointments(
            principal.org_id,
            patient_id=patient_id,
            provider_id=provider_id,
            start=from_,
            end=to,
            locations=locations,
            limit=limit,
            hidden_locations=await hidden_locations(repos, principal),
        )
        found = [a for a in found if principal.allows_patient(a.patient_id, a.location_id)]
        entry.disclose_patients(a.patient_id for a in found)
    return AppointmentPage(items=[appointment_read(a) for a in found], count=len(found))


@router.post("/{appointment_id}/cancel", response_model=AppointmentRead)
async def cancel_appointment(
    appointment_id: str, body: AppointmentCancel, ctx: BookContext
) -> AppointmentRead:
    """Cancel an appointment; its time becomes free again."""
    return await _stepped(
        ctx, appointment_id, lambda a: lifecycle.cancel(a, reason=body.reason), AppointmentCancelled
    )


@router.post("/{appointment_id}/confirm", response_model=AppointmentRead)
async def confirm_appointment(appointment_id: str, ctx: BookContext) -> AppointmentRead:
    """Record that the patient confirmed they will come."""
    async with _opened(ctx, appointment_id, "update") as current:
        changed = await record_confirmation(work_of(ctx), current)
    return appointment_read(changed)


@router.post("/{appointment_id}/check-in", response_model=AppointmentRead)
async def check_in_appointment(appointment_id: str, ctx: BookContext) -> AppointmentRead:
    """Check the patient in on arrival."""
    now = ctx.runtime.clock.now()
    return await _stepped(
        ctx, appointment_id, lambda a: lifecycle.check_in(a, now=now), AppointmentCheckedIn
    )


@router.post("/{appointment_id}/no-show", response_model=AppointmentRead)
async def no_show_appointment(appointment_id: str, ctx: BookContext) -> AppointmentRead:
    """Mark a booked appointment whose start has passed as a no-show."""
    async with _opened(ctx, appointment_id, "update") as current:
        # The same function the automatic no-show check uses, so both paths change the
        # state, end the timers and publish the event identically.
        changed = await record_no_show(work_of(ctx), current, now=ctx.runtime.clock.now())
    return appointment_read(changed)


@router.post("/{appointment_id}/reschedule", response_model=RescheduleResult)
async def reschedule_appointment(
    appointment_id: str, body: AppointmentReschedule, ctx: BookContext
) -> RescheduleResult:
    """Move an appointment to another open slot: the old one is cancelled and a new one
    booked, linked both ways; one transaction, so either both happen or neither."""
    async with _opened(ctx, appointment_id, "update") as old:
        cancelled, booked = await reschedule_to(
            work_of(ctx), old, start_at=body.start_at, provider_id=body.provider_id
        )
    return RescheduleResult(cancelled=appointment_read(cancelled), booked=appointment_read(booked))
