"""Record, correct, withdraw and read a patient's clinical facts.

A fact is opened through the record's own access check (`open_record`: tenant, location,
care relationships, sensitive locations, break-glass), plus the clinical category: a
caller whose grant does not show clinical data is refused before the record is looked
up. Every call is audited under the fact's FHIR resource type.

Dedup: a fact's key at its source is (source, resource `id` or first `identifier`). The
same key with the same content is the fact already held (no new version, no event); the
same key with other content is its next version; a new key, or no key, is a new fact.
Each new version stages one `ClinicalFactRecorded` in the transaction that writes it.
The patient's row is locked while a fact is written, so two posts of one fact cannot
both create it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.patients import ClinicalFactRecorded, FactCoding, FactQuantity
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.context import Caller
from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.problems import Conflict, Forbidden, NotFound, ProblemError
from careloop_kit.service import Runtime
from careloop_patients.domain.facts import (
    ENTERED_IN_ERROR,
    RESOURCE_TYPES,
    FactKind,
    FactSource,
    FieldError,
    InvalidFact,
    entered_in_error,
    extract,
    source_key,
    source_of,
    subject_field,
)
from careloop_patients.domain.patient import PatientStatus
from careloop_patients.store.facts import FactRepository, StoredFact
from careloop_patients.usecases.patients import READ, UPDATE, open_record

CATEGORIES = [CLINICAL]
# The resource type audited for a read of several kinds at once, or of a fact not found.
BUNDLE = "Bundle"


class InvalidFactProblem(ProblemError):
    status, title, slug = 422, "Invalid clinical fact", "invalid-fact"


@dataclass(frozen=True)
class Recorded:
    fact: StoredFact
    created: bool
    """A new fact (201); else the fact already held or its next version (200)."""


def facts(runtime: Runtime, session: AsyncSession) -> FactRepository:
    keys: KeyRing = runtime.state["keys"]
    indexer: BlindIndexer = runtime.state["indexer"]
    return FactRepository(session, keys, indexer)


def invalid(errors: tuple[FieldError, ...] | list[FieldError]) -> InvalidFactProblem:
    """The 422 of a resource, its fields named as the request body's."""
    return InvalidFactProblem(
        "The resource cannot be recorded as a clinical fact; see `errors`.",
        errors=[
            {
                "field": f"body.{e.field}" if e.field else "body",
                "message": e.message,
                "type": e.type,
            }
            for e in errors
        ],
    )


def _source(principal: AuthenticatedPrincipal, resource: dict[str, Any]) -> FactSource:
    """Staff entry unless the resource claims its source, which only staff may do (an
    intake form or an EHR import that staff, or their tools, pass on)."""
    try:
        claimed = source_of(resource)
    except InvalidFact as exc:
        raise invalid(exc.errors) from exc
    if claimed is None or claimed is FactSource.STAFF_ENTRY:
        return FactSource.STAFF_ENTRY
    if principal.actor_type != "user" or principal.is_patient:
        raise Forbidden(f"Only staff may record a fact as from {claimed.value}.")
    return claimed


def _content(kind: FactKind, resource: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """What is stored and compared: the resource without the source's `id` and `meta`
    (the fact has its own), naming the patient it was posted to."""
    field = subject_field(kind)
    reference = f"Patient/{patient_id}"
    given = (resource.get(field) or {}).get("reference")
    if given is not None and given != reference:
        raise invalid([FieldError(f"{field}.reference", f"Must be {reference} (or absent).")])
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    body[field] = {**(resource.get(field) or {}), "reference": reference}
    return body


def _extract(kind: FactKind, body: dict[str, Any]) -> Any:
    try:
        return extract(kind, body)
    except InvalidFact as exc:
        raise invalid(exc.errors) from exc


async def _publish(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    stored: StoredFact,
    location_id: str | None,
) -> None:
    fact = stored.fact
    event = ClinicalFactRecorded(
        fact_id=stored.id,
        patient_id=stored.patient_id,
        org_id=stored.org_id,
        kind=fact.kind.value,
        version=stored.version,
        status=fact.status,
        codes=tuple(FactCoding(system=c.system, code=c.code) for c in fact.codes),
        effective_on=fact.effective_on,
        effective_until=fact.effective_until,
        quantities=tuple(
            FactQuantity(
                code=None if q.code is None else FactCoding(system=q.code.system, code=q.code.code),
                value=q.value,
                unit=q.unit,
            )
            for q in fact.quantities
        ),
        source=stored.source.value,
        recorded_at=stored.updated_at,
    )
    await runtime.outbox.add(
        session,
        event,
        org_id=stored.org_id,
        location_id=location_id,
        correlation_id=caller.request_id,
    )


async def _resource_type(repo: FactRepository, org_id: str, patient_id: str, fact_id: str) -> str:
    """The fact's FHIR type, known before the access check so a refusal is filed under
    it too (only the kind is read; nothing is opened)."""
    kind = await repo.kind_of(org_id, patient_id, fact_id)
    return BUNDLE if kind is None else RESOURCE_TYPES[kind]


def _missing_fact(fact_id: str) -> str:
    return f"No clinical fact {fact_id} for this patient."


def _active(status: PatientStatus, patient_id: str) -> None:
    if status is not PatientStatus.ACTIVE:
        raise Conflict(f"Patient {patient_id} was merged; record facts on the surviving record.")


async def record_fact(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    patient_id: str,
    *,
    kind: FactKind,
    resource: dict[str, Any],
) -> Recorded:
    """Record the FHIR resource (validated by its model) as a fact of the patient."""
    principal = caller.principal
    entry = AuditEntry(
        action="create",
        resource_type=RESOURCE_TYPES[kind],
        phi_categories=CATEGORIES,
        patient_id=patient_id,
    )
    async with open_record(
        runtime, session, caller, entry, patient_id, for_update=True, needs=(UPDATE, CLINICAL)
    ) as record:
        _active(record.status, patient_id)
        source = _source(principal, resource)
        key = source_key(resource)
        body = _content(kind, resource, patient_id)
        fact = _extract(kind, body)
        repo = facts(runtime, session)
        now = runtime.clock.now()
        existing = (
            None
            if key is None
            else await repo.find_by_source_key(
                principal.org_id, patient_id, source, key, for_update=True
            )
        )
        if existing is None:
            stored = await repo.add(
                org_id=principal.org_id,
                patient_id=patient_id,
                source=source,
                source_key=key,
                resource=body,
                fact=fact,
                now=now,
            )
            entry.resource_id = stored.id
            await _publish(runtime, session, caller, stored, record.location_id)
            return Recorded(stored, created=True)
        entry.action, entry.resource_id = "update", existing.id
        if existing.kind is not kind:
            raise Conflict(
                f"The source's id names a {RESOURCE_TYPES[existing.kind]} already "
                f"(fact {existing.id}); a fact keeps its resource type."
            )
        same = repo.content_token(principal.org_id, source, body, existing.index_version)
        if same == existing.content_token:
            return Recorded(existing, created=False)
        stored = await repo.revise(existing, resource=body, fact=fact, now=now)
        await _publish(runtime, session, caller, stored, record.location_id)
    return Recorded(stored, created=False)


async def mark_entered_in_error(
    runtime: Runtime, session: AsyncSession, caller: Caller, patient_id: str, fact_id: str
) -> StoredFact:
    """Withdraw a fact: its next version, status entered-in-error (once; again is a no-op)."""
    principal = caller.principal
    repo = facts(runtime, session)
    entry = AuditEntry(
        action="update",
        resource_type=await _resource_type(repo, principal.org_id, patient_id, fact_id),
        phi_categories=CATEGORIES,
        patient_id=patient_id,
        resource_id=fact_id,
    )
    async with open_record(
        runtime, session, caller, entry, patient_id, for_update=True, needs=(UPDATE, CLINICAL)
    ) as record:
        current = await repo.get(principal.org_id, patient_id, fact_id, for_update=True)
        if current is None:
            raise NotFound(_missing_fact(fact_id))
        if current.fact.status == ENTERED_IN_ERROR:
            return current
        body = entered_in_error(current.kind, current.resource)
        fact = _extract(current.kind, body)
        stored = await repo.revise(current, resource=body, fact=fact, now=runtime.clock.now())
        await _publish(runtime, session, caller, stored, record.location_id)
    return stored


async def read_fact(
    runtime: Runtime, session: AsyncSession, caller: Caller, patient_id: str, fact_id: str
) -> StoredFact:
    principal = caller.principal
    repo = facts(runtime, session)
    entry = AuditEntry(
        action="read",
        resource_type=await _resource_type(repo, principal.org_id, patient_id, fact_id),
        phi_categories=CATEGORIES,
        patient_id=patient_id,
        resource_id=fact_id,
    )
    async with open_record(runtime, session, caller, entry, patient_id, needs=(READ, CLINICAL)):
        found = await repo.get(principal.org_id, patient_id, fact_id)
        if found is None:
            raise NotFound(_missing_fact(fact_id))
    return found


async def list_facts(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    patient_id: str,
    *,
    kind: FactKind | None,
) -> list[StoredFact]:
    """The patient's facts (of one kind), oldest first; entered-in-error ones included,
    as FHIR searches return them, marked by their status."""
    principal = caller.principal
    entry = AuditEntry(
        action="read",
        resource_type=BUNDLE if kind is None else RESOURCE_TYPES[kind],
        phi_categories=CATEGORIES,
        patient_id=patient_id,
    )
    async with open_record(runtime, session, caller, entry, patient_id, needs=(READ, CLINICAL)):
        return await facts(runtime, session).list(principal.org_id, patient_id, kind=kind)
