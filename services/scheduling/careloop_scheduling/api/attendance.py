"""A patient's attendance history: what later no-show risk scoring is built from.

Minimum necessary for staff with a location scope: the counts cover the patient's
visits at every location of the organization (the risk of a missed visit does not
depend on where the earlier ones were, and a count names no provider, time or visit
type), while the list holds only the visits at locations in scope. Asking at all
needs a care relationship: at least one appointment of the patient, ever, at one of
the caller's locations (403 otherwise, as reading one of its appointments elsewhere
would be). Staff of every location and the patient itself see everything.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from careloop_kit.audit import fingerprint_query
from careloop_kit.problems import Forbidden
from careloop_scheduling.api.appointments import appointment_read, audit_entry
from careloop_scheduling.api.common import ReadContext
from careloop_scheduling.api.schemas import AttendanceCounts, AttendanceRead
from careloop_scheduling.domain.attendance import DEFAULT_WINDOW, summarize
from careloop_scheduling.usecases.locations import hidden_locations

router = APIRouter(prefix="/patients", tags=["attendance"])

MAX_WINDOW_DAYS = 3650


@router.get("/{patient_id}/attendance", response_model=AttendanceRead)
async def read_attendance(
    patient_id: str,
    ctx: ReadContext,
    window_days: Annotated[int, Query(ge=1, le=MAX_WINDOW_DAYS)] = DEFAULT_WINDOW.days,
    as_of: Annotated[AwareDatetime | None, Query()] = None,
) -> AttendanceRead:
    """A patient's attendance counts and past visits over a window (default 2 years)."""
    used = ["window_days"] if as_of is None else ["window_days", "as_of"]
    entry = audit_entry("read")
    entry.patient_id = patient_id
    entry.query_fingerprint = fingerprint_query(used)
    principal, repos = ctx.principal, ctx.repos
    async with ctx.audited(entry):
        _, locations = principal.listing_scope(patient_id)
        if locations is not None and (
            not locations
            or not await repos.appointments.patient_seen_at(principal.org_id, patient_id, locations)
        ):
            raise Forbidden("This patient has no appointment at your locations.")
        now = ctx.runtime.clock.now()
        # A later moment would count visits that have not happened yet as unresolved;
        # an earlier one gives the history as it stood then (features for training).
        until = now if as_of is None else min(as_of, now)
        since = until - timedelta(days=window_days)
        visits = await repos.appointments.patient_visits(
            principal.org_id, patient_id, since=since, until=until
        )
        summary = summarize(visits, since=since, as_of=until)
        hidden = await hidden_locations(repos, principal)
        listed = [
            v.appointment
            for v in visits
            if (locations is None or v.appointment.location_id in locations)
            and v.appointment.location_id not in hidden
        ]
    return AttendanceRead(
        patient_id=patient_id,
        since=since,
        as_of=until,
        # The counts one for one, `no_show_rate` (a property of the summary) included.
        counts=AttendanceCounts.model_validate(summary, from_attributes=True),
        items=[appointment_read(a) for a in listed],
        not_listed=len(visits) - len(listed),
    )
