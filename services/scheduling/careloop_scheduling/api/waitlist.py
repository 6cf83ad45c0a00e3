"""Add, list and remove waitlist entries.

Staff put a patient on a location's waitlist for an appointment type (optionally one
provider), with the dates the patient can come and, if they like, the weekdays and
parts of the day; an entry may name the patient's existing appointment, which a freed
earlier time then replaces. Patients add, list and remove their own (self-scheduling).
Object checks and audit follow the appointments: an entry ties a patient to a kind of
visit at a location, so every access is audited under the `clinical` PHI category;
staff reach entries of locations in their scope, a patient only its own, another
tenant's entry is a 404. Entries at a sensitive location are reached only by staff
whose scope names that location (an org-wide scope is not enough: 403, and left out of
lists). A location whose `waitlist` switch is off takes no new entries (409).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from careloop_kit.api_types import IdStr
from careloop_kit.audit import AuditEntry, fingerprint_query
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.problems import Conflict, NotFound
from careloop_kit.repository import new_id
from careloop_scheduling.api.common import BookContext, ReadContext
from careloop_scheduling.domain.appointment import AppointmentStatus
from careloop_scheduling.domain.waitlist import (
    ACTIVE_ENTRY_STATUSES,
    EntryStatus,
    PartOfDay,
    WaitlistEntry,
    validate_window,
)
from careloop_scheduling.usecases.catalog import load_provider, load_type, zone_of
from careloop_scheduling.usecases.common import InvalidScheduling
from careloop_scheduling.usecases.locations import check_reach, feature_on, hidden_locations
from careloop_scheduling.usecases.waitlist import waitlist_work

router = APIRouter(prefix="/waitlist", tags=["waitlist"])

RESOURCE = "WaitlistEntry"
PHI = [CLINICAL]
MAX_PAGE = 200


class WaitlistEntryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: IdStr
    location_id: IdStr
    appointment_type_id: IdStr
    provider_id: IdStr | None = Field(None, description="Only this provider; default: any.")
    earliest_date: date = Field(description="First local date the patient can come.")
    latest_date: date = Field(description="Last local date the patient can come.")
    weekdays: list[int] | None = Field(
        None, max_length=7, description="Local weekdays the patient can come, 0 Monday .. 6."
    )
    parts_of_day: list[PartOfDay] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="morning (before 12:00), afternoon (12:00-17:00), evening (from 17:00).",
    )
    appointment_id: IdStr | None = Field(
        None,
        description="The patient's booked appointment to move if an earlier time frees up "
        "(same location and type).",
    )


class WaitlistEntryRead(BaseModel):
    id: str
    org_id: str
    patient_id: str
    location_id: str
    appointment_type_id: str
    provider_id: str | None
    earliest_date: date
    latest_date: date
    weekdays: list[int] | None
    parts_of_day: list[PartOfDay] | None
    appointment_id: str | None
    status: EntryStatus
    booked_appointment_id: str | None
    position: int = Field(description="Waitlist order: lower was added first.")
    created_at: datetime


class WaitlistPage(BaseModel):
    items: list[WaitlistEntryRead]
    count: int


def entry_read(e: WaitlistEntry) -> WaitlistEntryRead:
    # The response carries the record's fields one for one (its tuples become lists).
    return WaitlistEntryRead.model_validate(e, from_attributes=True)


def _entry(action: str, entry_id: str | None = None) -> AuditEntry:
    return AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=PHI, resource_id=entry_id
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WaitlistEntryRead)
async def add_entry(body: WaitlistEntryCreate, ctx: BookContext) -> WaitlistEntryRead:
    """Put a patient on a location's waitlist for an appointment type."""
    runtime, principal, repos = ctx.runtime, ctx.principal, ctx.repos
    entry = _entry("create")
    entry.patient_id = body.patient_id
    async with ctx.audited(entry):
        await check_reach(repos, principal, body.patient_id, body.location_id)
        org_id = principal.org_id
        if not await feature_on(repos, org_id, body.location_id, "waitlist"):
            raise Conflict(f"The waitlist is switched off at location {body.location_id}.")
        kind = await load_type(repos, org_id, body.appointment_type_id)
        if not kind.active:
            raise InvalidScheduling(f"Appointment type {kind.id} is retired.")
        zone = await zone_of(repos, org_id, body.location_id)
        if body.provider_id is not None:
            provider = await load_provider(repos, org_id, body.provider_id)
            if not provider.works_at(body.location_id):
                raise InvalidScheduling(
                    f"Provider {provider.id} does not work at {body.location_id}."
                )
        today = runtime.clock.now().astimezone(ZoneInfo(zone)).date()
        why = validate_window(body.earliest_date, body.latest_date, body.weekdays, today=today)
        if why is not None:
            raise InvalidScheduling(why)
        if body.appointment_id is not None:
            current = await repos.appointments.get_appointment(org_id, body.appointment_id)
            if current is None or current.patient_id != body.patient_id:
                raise NotFound(f"No appointment {body.appointment_id} of this patient.")
            if current.status not in (AppointmentStatus.BOOKED, AppointmentStatus.PROPOSED):
                raise Conflict(
                    "Only a booked appointment can be moved earlier.",
                    current_status=current.status.value,
                )
            if (current.location_id, current.appointment_type_id) != (
                body.location_id,
                body.appointment_type_id,
            ):
                raise InvalidScheduling(
                    "The appointment to move must be of the same location and type."
                )
        if await repos.waitlist.active_entry_exists(
            org_id, body.patient_id, body.location_id, body.appointment_type_id
        ):
            raise Conflict("The patient is already on this waitlist.")
        now = runtime.clock.now()
        created = await repos.waitlist.add_waitlist_entry(
            WaitlistEntry(
                id=new_id(),
                org_id=org_id,
                created_at=now,
                # The body names the entry's own fields; the record keeps its lists as
                # tuples (the weekdays sorted, once each).
                **body.model_dump(exclude={"weekdays", "parts_of_day"}),
                weekdays=None if body.weekdays is None else tuple(sorted(set(body.weekdays))),
                parts_of_day=None if body.parts_of_day is None else tuple(body.parts_of_day),
            ),
            now,
        )
        entry.resource_id = created.id
    return entry_read(created)


@router.get("", response_model=WaitlistPage)
async def list_entries(
    ctx: ReadContext,
    patient_id: str | None = None,
    location_id: str | None = None,
    status_: Annotated[list[EntryStatus] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> WaitlistPage:
    """List waitlist entries in waitlist order (default: waiting and offered), within
    the caller's locations (a patient account: its own entries only)."""
    used = [
        k
        for k, v in (("patient_id", patient_id), ("location_id", location_id), ("status", status_))
        if v is not None
    ]
    entry = _entry("query")
    entry.query_fingerprint = fingerprint_query(used)
    principal, repos = ctx.principal, ctx.repos
    async with ctx.audited(entry):
        patient_id, locations = principal.listing_scope(patient_id)
        found = await repos.waitlist.list_waitlist_entries(
            principal.org_id,
            patient_id=patient_id,
            location_id=location_id,
            locations=locations,
            statuses=status_ or ACTIVE_ENTRY_STATUSES,
            limit=limit,
            hidden_locations=await hidden_locations(repos, principal),
        )
        found = [e for e in found if principal.allows_patient(e.patient_id, e.location_id)]
        entry.disclose_patients(e.patient_id for e in found)
    return WaitlistPage(items=[entry_read(e) for e in found], count=len(found))


@router.delete("/{entry_id}", response_model=WaitlistEntryRead)
async def remove_entry(entry_id: str, ctx: BookContext) -> WaitlistEntryRead:
    """Take an entry off the waitlist; its open offer, if any, is withdrawn."""
    principal, repos = ctx.principal, ctx.repos
    audit = _entry("delete", entry_id)
    async with ctx.opened(
        audit,
        repos.waitlist.get_waitlist_entry(principal.org_id, entry_id, for_update=True),
        missing=f"No waitlist entry {entry_id} in this organization.",
        patient_of=lambda e: e.patient_id,
        check=lambda e: check_reach(repos, principal, e.patient_id, e.location_id),
    ) as found:
        if found.status not in ACTIVE_ENTRY_STATUSES:
            raise Conflict(
                f"The entry is {found.status}, no longer on the list.",
                current_status=found.status.value,
            )
        await waitlist_work(ctx.runtime, ctx.session).withdraw(found)
        removed = await repos.waitlist.get_waitlist_entry(found.org_id, found.id)
    assert removed is not None
    return entry_read(removed)
