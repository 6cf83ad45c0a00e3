"""Evaluating one patient: the profile and facts care-gaps holds, opened, go to the pure
evaluator; each finding is applied to the measure's current gap, and only what changes
is written, announced and audited. The same facts evaluated again change nothing, which
is what makes incremental and population evaluations safe to repeat.

Changes made here are the service's own (no one asked): each is audited on the
patient's trail with the service as the actor, as tasks does for tasks made from events.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.domain.evaluator import evaluate
from careloop_caregaps.domain.facts import Fact, PatientProfile
from careloop_caregaps.domain.gap import Change, Gap, apply_finding
from careloop_caregaps.store.codec import demographics_of, fact_of
from careloop_caregaps.store.repository import Repositories, repositories
from careloop_caregaps.usecases.changes import keep_change, opened_gap
from careloop_caregaps.usecases.common import (
    RESOURCE,
    SERVICE_ACTOR,
    SERVICE_SUBJECT,
    field_cipher,
    library_of,
)
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL, DEMOGRAPHICS
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime

WITHDRAWN = "entered-in-error"
"""A fact's status that withdraws it: the evaluator never sees it."""


def system_actor(org_id: str) -> Principal:
    return Principal(actor_id=SERVICE_ACTOR, actor_type="system", org_id=org_id)


async def audit_change(runtime: Runtime, session: AsyncSession, gap: Gap, action: str) -> None:
    entry = AuditEntry(
        action=action,
        resource_type=RESOURCE,
        phi_categories=[CLINICAL],
        patient_id=gap.patient_id,
        resource_id=gap.id,
    )
    await recorder_of(runtime).record(session, system_actor(gap.org_id), entry)


async def keep_service_change(runtime: Runtime, session: AsyncSession, change: Change) -> None:
    """A change the service made from an event or an evaluation: kept and audited."""
    await keep_change(runtime, session, change, actor_id=SERVICE_SUBJECT)
    await audit_change(runtime, session, change.gap, "create" if change.opened else "update")


async def load_profile(
    runtime: Runtime, session: AsyncSession, repos: Repositories, org_id: str, patient_id: str
) -> PatientProfile:
    """The patient as the evaluator reads it: demographics and current facts, opened."""
    cipher = field_cipher(runtime)
    birth_date, sex = None, None
    sealed = await repos.patients.demographics_of(org_id, patient_id)
    if sealed is not None:
        text = await cipher.open_field(
            session,
            sealed,
            org_id=org_id,
            table="patient_profile",
            column="demographics",
            row_id=patient_id,
        )
        birth_date, sex = demographics_of(text)
    facts: list[Fact] = []
    for stored in await repos.patients.facts_of(org_id, patient_id):
        text = await cipher.open_field(
            session,
            stored.fact_ct,
            org_id=org_id,
            table="clinical_fact",
            column="fact",
            row_id=stored.fact_id,
        )
        fact = fact_of(stored.fact_id, text)
        if fact.status != WITHDRAWN:
            facts.append(fact)
    return PatientProfile(patient_id, birth_date, sex, tuple(facts))


async def evaluate_patient(
    runtime: Runtime,
    session: AsyncSession,
    org_id: str,
    patient_id: str,
    *,
    as_of: date | None = None,
) -> int:
    """Evaluate every measure for the patient on `as_of` (today, UTC) and apply what it
    finds; the number of gaps that changed."""
    repos = repositories(session)
    now = runtime.clock.now()
    await repos.patients.lock(org_id, patient_id)
    current_rows = await repos.gaps.current_of(org_id, patient_id)
    profile = await load_profile(runtime, session, repos, org_id, patient_id)
    findings = evaluate(library_of(runtime), profile, as_of or now.date())
    attribution = await repos.patients.attribution_of(org_id, patient_id)
    changed = 0
    for finding in findings:
        stored = current_rows.get(finding.measure_id)
        current = None if stored is None else await opened_gap(runtime, session, stored)
        change = apply_finding(
            current,
            finding,
            gap_id=new_id(),
            org_id=org_id,
            patient_id=patient_id,
            attribution=attribution,
            now=now,
        )
        if change is not None:
            await keep_service_change(runtime, session, change)
            changed += 1
    return changed


async def audit_demographics(
    runtime: Runtime, session: AsyncSession, org_id: str, patient_id: str
) -> None:
    """The service stored a patient's birth date and sex (read from patients)."""
    entry = AuditEntry(
        action="update",
        resource_type="Patient",
        phi_categories=[DEMOGRAPHICS],
        patient_id=patient_id,
        resource_id=patient_id,
    )
    await recorder_of(runtime).record(session, system_actor(org_id), entry)
