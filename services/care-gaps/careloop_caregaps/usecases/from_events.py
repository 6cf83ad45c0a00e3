"""What other services' events do to care-gaps' view and gaps. The kit's consumer runs
each step in the transaction of its inbox mark, so a redelivered event is a no-op; the
fact's own version covers what the inbox cannot see (the same fact sent again under a
new event id, or an older correction arriving late).

- patients: a fact is kept (sealed) and the patient re-evaluated; a registration or a
  change of birth date or sex reads the demographics from patients, keeps them sealed
  and re-evaluates; a merge moves facts and gaps to the surviving record and
  re-evaluates it.
- scheduling: a booked visit attributes the patient (the care relationship) and marks
  the gaps of measures that list its appointment type scheduled; a cancellation or a
  no-show opens them again; an arrival attributes.
- identity: which locations are sensitive.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.domain.facts import Coding, Fact, Quantity
from careloop_caregaps.domain.gap import Attribution, Change, Gap, booked, visit_cancelled
from careloop_caregaps.store.codec import demographics_text, fact_text
from careloop_caregaps.store.repository import Repositories, repositories
from careloop_caregaps.usecases.changes import opened_gap
from careloop_caregaps.usecases.common import demographics_source, field_cipher
from careloop_caregaps.usecases.evaluation import (
    audit_demographics,
    evaluate_patient,
    keep_service_change,
)
from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_contracts.patients import (
    ClinicalFactRecorded,
    PatientMerged,
    PatientRegistered,
    PatientUpdated,
)
from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentEvent,
    AppointmentNoShow,
)
from careloop_kit.locations import logged_if_stale
from careloop_kit.service import Runtime

log = logging.getLogger(__name__)

PATIENT_EVENTS = (ClinicalFactRecorded, PatientRegistered, PatientUpdated, PatientMerged)
APPOINTMENT_EVENTS = (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentNoShow,
    AppointmentCheckedIn,
)
DEMOGRAPHIC_FIELDS = frozenset({"birth_date", "sex"})
"""Patients' field names (`PatientUpdated.changed_fields`) the measures depend on."""


def _fact(event: ClinicalFactRecorded) -> Fact:
    return Fact(
        fact_id=event.fact_id,
        kind=event.kind,
        status=event.status,
        codes=tuple(Coding(c.system, c.code) for c in event.codes),
        effective_on=event.effective_on,
        effective_until=event.effective_until,
        quantities=tuple(
            Quantity(
                value=q.value,
                unit=q.unit,
                code=None if q.code is None else Coding(q.code.system, q.code.code),
            )
            for q in event.quantities
        ),
    )


async def record_fact(runtime: Runtime, session: AsyncSession, event: ClinicalFactRecorded) -> int:
    """Keep the fact at its version and re-evaluate its patient; a version held already
    (the same fact again) changes nothing. The number of gaps changed."""
    repos = repositories(session)
    now = runtime.clock.now()
    held = await repos.patients.fact_version(event.fact_id)
    if held is not None and held >= event.version:
        log.info("fact %s v%s: held at v%s already, skipped", event.fact_id, event.version, held)
        return 0
    await repos.patients.ensure(event.org_id, event.patient_id, now)
    sealed = await field_cipher(runtime).seal_field(
        session,
        fact_text(_fact(event)),
        org_id=event.org_id,
        table="clinical_fact",
        column="fact",
        row_id=event.fact_id,
    )
    stored = await repos.patients.record_fact(
        event.org_id,
        event.patient_id,
        event.fact_id,
        version=event.version,
        fact_ct=sealed,
        now=now,
    )
    if not stored:  # a concurrent delivery stored it between the two statements
        return 0
    return await evaluate_patient(runtime, session, event.org_id, event.patient_id)


async def refresh_demographics(
    runtime: Runtime, session: AsyncSession, org_id: str, patient_id: str
) -> int:
    """Read the birth date and sex from patients, keep them sealed, re-evaluate. A
    failed read raises: the kit's consumer retries, then dead-letters the event."""
    found = await demographics_source(runtime).demographics(org_id, patient_id)
    if found is None:
        log.info("patient %s: not found at patients, nothing to evaluate", patient_id)
        return 0
    birth_date, sex = found
    sealed = await field_cipher(runtime).seal_field(
        session,
        demographics_text(birth_date, sex),
        org_id=org_id,
        table="patient_profile",
        column="demographics",
        row_id=patient_id,
    )
    await repositories(session).patients.set_demographics(
        org_id, patient_id, sealed, runtime.clock.now()
    )
    await audit_demographics(runtime, session, org_id, patient_id)
    return await evaluate_patient(runtime, session, org_id, patient_id)


async def merge_patients(runtime: Runtime, session: AsyncSession, event: PatientMerged) -> int:
    """The merged record's facts and gaps become the survivor's; the survivor is then
    evaluated over all of them."""
    repos = repositories(session)
    org, merged, survivor = event.org_id, event.merged_patient_id, event.surviving_patient_id
    await repos.patients.ensure(org, survivor, runtime.clock.now())
    await repos.patients.lock(org, survivor)
    await repos.patients.lock(org, merged)
    await repos.patients.move_facts(org, merged, survivor)
    await repos.gaps.move(org, merged, survivor)
    await repos.patients.forget(org, merged)
    return await evaluate_patient(runtime, session, org, survivor)


async def on_patient_event(
    runtime: Runtime,
    session: AsyncSession,
    event: ClinicalFactRecorded | PatientRegistered | PatientUpdated | PatientMerged,
) -> int:
    if isinstance(event, ClinicalFactRecorded):
        return await record_fact(runtime, session, event)
    if isinstance(event, PatientRegistered):
        await repositories(session).patients.ensure(
            event.org_id, event.patient_id, runtime.clock.now()
        )
        return await refresh_demographics(runtime, session, event.org_id, event.patient_id)
    if isinstance(event, PatientUpdated):
        if DEMOGRAPHIC_FIELDS.isdisjoint(event.changed_fields):
            return 0
        return await refresh_demographics(runtime, session, event.org_id, event.patient_id)
    return await merge_patients(runtime, session, event)


async def _current_gaps(
    runtime: Runtime, session: AsyncSession, repos: Repositories, org: str, patient: str
) -> dict[str, Gap]:
    stored = await repos.gaps.current_of(org, patient)
    return {m: await opened_gap(runtime, session, s) for m, s in stored.items()}


async def _attribute(
    runtime: Runtime, session: AsyncSession, repos: Repositories, event: AppointmentEvent
) -> None:
    """The visit is the patient's care relationship now (unless a later one is held):
    the patient's active gaps follow it to its location and provider."""
    applied = await repos.patients.attribute(
        event.org_id,
        event.patient_id,
        location_id=event.location_id,
        provider_id=event.provider_id,
        appointment_id=event.appointment_id,
        occurred_at=event.occurred_at,
    )
    if not applied:
        return
    here = Attribution(event.location_id, event.provider_id)
    now = runtime.clock.now()
    for gap in (
        await _current_gaps(runtime, session, repos, event.org_id, event.patient_id)
    ).values():
        if gap.is_active and (gap.location_id, gap.provider_id) != (
            here.location_id,
            here.provider_id,
        ):
            moved = replace(
                gap,
                location_id=here.location_id,
                provider_id=here.provider_id,
                version=gap.version + 1,
                updated_at=now,
            )
            await keep_service_change(runtime, session, Change(moved, gap.status, None))


async def on_appointment_event(
    runtime: Runtime,
    session: AsyncSession,
    event: AppointmentBooked | AppointmentCancelled | AppointmentNoShow | AppointmentCheckedIn,
) -> int:
    repos = repositories(session)
    now = runtime.clock.now()
    await repos.patients.ensure(event.org_id, event.patient_id, now)
    await repos.patients.lock(event.org_id, event.patient_id)
    if isinstance(event, AppointmentCheckedIn):
        await _attribute(runtime, session, repos, event)
        return 0
    if isinstance(event, AppointmentBooked):
        await _attribute(runtime, session, repos, event)
        measures = await repos.measures.measures_for(event.org_id, event.appointment_type_id)
        if not measures:
            return 0
    changed = 0
    for measure_id, gap in (
        await _current_gaps(runtime, session, repos, event.org_id, event.patient_id)
    ).items():
        if isinstance(event, AppointmentBooked):
            change = booked(gap, event.appointment_id, now) if measure_id in measures else None
        else:
            change = visit_cancelled(gap, event.appointment_id, now)
        if change is not None:
            await keep_service_change(runtime, session, change)
            changed += 1
    return changed


async def apply_location(
    runtime: Runtime, session: AsyncSession, event: LocationCreated | LocationChanged
) -> bool:
    applied = await repositories(session).locations.apply(
        event.org_id,
        event.location_id,
        sensitive=event.sensitive,
        changed_at=event.occurred_at,
        now=runtime.clock.now(),
    )
    return logged_if_stale(log, event, applied)
