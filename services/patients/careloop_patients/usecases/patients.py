"""Register, read, update, search and merge a patient: one function per command or query.

Every step is audited in the caller's session (`AuditRecorder.scope`): the audit record
commits with the change, a refusal is recorded in its own transaction. Authorization of
the object happens here, after the door checked the permission: tenant (another
organization's patient is a 404), location scope (403), a patient account's own record
(403); break-glass reads and updates are audited with purpose of use `ETREAT`
(`AuthenticatedPrincipal.acting_for`). Staff of a location where the patient has an
open care relationship (`usecases.care_relationships`) read and update the record as
if it were at their location, audited with the relationship's purpose of use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Event, PatientMerged, PatientRegistered, PatientUpdated
from careloop_kit.audit import AuditEntry, fingerprint_query, recorder_of
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal, visible_categories
from careloop_kit.context import Caller, load_in_scope
from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.problems import Conflict, Forbidden, NotFound, ProblemError
from careloop_kit.service import Runtime
from careloop_patients.domain.patient import (
    ALL_CATEGORIES,
    InvalidPatient,
    PatientDetails,
    PatientStatus,
    SearchKey,
    apply_changes,
    categories_of,
    merge_details,
    name_birth_key,
    normalize_email,
    normalize_phone,
    validate,
)
from careloop_patients.store.repository import PatientRepository, StaleVersion, StoredPatient
from careloop_patients.usecases.care_relationships import access_basis, move_to_survivor

RESOURCE = "Patient"
CREATE, READ, UPDATE, SEARCH, MERGE = (
    "patients:create",
    "patients:read",
    "patients:update",
    "patients:search",
    "patients:merge",
)


class InvalidPatientProblem(ProblemError):
    status, title, slug = 422, "Invalid patient", "invalid-patient"


@dataclass(frozen=True)
class PatientQuery:
    """Search keys: family + given + birth_date together, phone, or email."""

    family: str | None = None
    given: str | None = None
    birth_date: date | None = None
    phone: str | None = None
    email: str | None = None
    limit: int = 20


def repository(runtime: Runtime, session: AsyncSession) -> PatientRepository:
    """The patient repository in the caller's session, with the service's keys."""
    keys: KeyRing = runtime.state["keys"]
    indexer: BlindIndexer = runtime.state["indexer"]
    return PatientRepository(session, keys, indexer)


def disclosed(principal: AuthenticatedPrincipal, permission: str) -> list[str]:
    """The patient PHI categories the principal may see through `permission`."""
    visible = visible_categories(principal, permission)
    return [category for category in ALL_CATEGORIES if category in visible]


def _only_own_record(principal: AuthenticatedPrincipal, patient_id: str) -> None:
    """A patient account is refused any other record before it is even looked up."""
    if principal.is_patient and patient_id != principal.patient_id:
        raise Forbidden("A patient account may only access its own record.")


def _search_locations(principal: AuthenticatedPrincipal) -> tuple[str, ...] | None:
    """The locations a search may return patients of (None: every location)."""
    if ALL_LOCATIONS in principal.locations and not principal.is_patient:
        return None
    return tuple(loc for loc in principal.locations if loc != ALL_LOCATIONS)


async def _load(
    repo: PatientRepository, org_id: str, patient_id: str, *, for_update: bool = False
) -> StoredPatient:
    stored = await repo.get(org_id, patient_id, for_update=for_update)
    if stored is None:
        raise NotFound(_missing(patient_id))
    return stored


async def _publish(
    runtime: Runtime, session: AsyncSession, caller: Caller, stored: StoredPatient, event: Event
) -> None:
    """Stage `event` about the record `stored`, routed by the record's tenant and
    location and correlated with the caller's request."""
    await runtime.outbox.add(
        session,
        event,
        org_id=stored.org_id,
        location_id=stored.location_id,
        correlation_id=caller.request_id,
    )


def _missing(patient_id: str) -> str:
    # Another tenant's patient is indistinguishable from a missing one.
    return f"No patient {patient_id} in this organization."


@asynccontextmanager
async def open_record(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    entry: AuditEntry,
    patient_id: str,
    *,
    for_update: bool = False,
    needs: tuple[str, str] | None = None,
) -> AsyncIterator[StoredPatient]:
    """Inside one audited scope, with the purpose of use of this access: the record the
    caller may open (locked when `for_update`), else 404 or 403, recorded against it.
    With `needs` (permission, PHI category), a caller whose grant does not show that
    category through that permission is refused (403) before the record is looked up."""
    principal = caller.principal
    basis = await access_basis(session, principal, patient_id)
    acting = principal.acting_for(patient_id, basis.location_id, relationships=basis.relationships)
    async with recorder_of(runtime).scope(session, acting, entry, **caller.meta):
        _only_own_record(principal, patient_id)
        if needs is not None and needs[1] not in visible_categories(principal, needs[0]):
            raise Forbidden(f"This needs {needs[0]} with access to {needs[1]} data.")
        yield await load_in_scope(
            entry,
            repository(runtime, session).get(principal.org_id, patient_id, for_update=for_update),
            missing=_missing(patient_id),
            patient_of=lambda p: p.id,
            check=lambda p: principal.can_access_patient(
                p.id, p.location_id, relationships=basis.relationships
            ),
        )


async def register_patient(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    *,
    location_id: str | None,
    details: PatientDetails,
) -> StoredPatient:
    """Register a patient at a location in the caller's scope; `PatientRegistered`."""
    principal = caller.principal
    entry = AuditEntry(action="create", resource_type=RESOURCE, phi_categories=ALL_CATEGORIES)
    async with recorder_of(runtime).scope(session, principal, entry, **caller.meta):
        # The registering location must be in scope; no location needs every location.
        principal.can_access_location(location_id)
        try:
            validate(details)
        except InvalidPatient as exc:
            raise InvalidPatientProblem(str(exc)) from exc
        stored = await repository(runtime, session).add(
            org_id=principal.org_id,
            location_id=location_id,
            details=details,
            now=runtime.clock.now(),
        )
        entry.patient_id = entry.resource_id = stored.id
        await _publish(
            runtime,
            session,
            caller,
            stored,
            PatientRegistered(
                patient_id=stored.id,
                org_id=stored.org_id,
                location_id=stored.location_id,
                registered_at=stored.created_at,
            ),
        )
    return stored


async def read_patient(
    runtime: Runtime, session: AsyncSession, caller: Caller, patient_id: str
) -> StoredPatient:
    """One patient, if the caller may open the record."""
    principal = caller.principal
    entry = AuditEntry(
        action="read",
        resource_type=RESOURCE,
        phi_categories=disclosed(principal, READ),
        patient_id=patient_id,
        resource_id=patient_id,
    )
    async with open_record(runtime, session, caller, entry, patient_id) as stored:
        return stored


async def update_patient(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    patient_id: str,
    *,
    version: int,
    changes: Mapping[str, object],
    requested_fields: list[str],
) -> StoredPatient:
    """Apply `changes` (field -> domain value) to the record at `version`;
    `PatientUpdated` naming the fields that changed. `requested_fields` are the fields
    the caller sent, whose PHI categories the audit names."""
    entry = AuditEntry(
        action="update",
        resource_type=RESOURCE,
        phi_categories=categories_of(requested_fields) or ALL_CATEGORIES,
        patient_id=patient_id,
        resource_id=patient_id,
    )
    async with open_record(runtime, session, caller, entry, patient_id, for_update=True) as current:
        if current.status is not PatientStatus.ACTIVE:
            raise Conflict(
                f"Patient {patient_id} was merged into {current.merged_into_id}; "
                "update that record."
            )
        if current.version != version:
            raise Conflict(
                f"Version {version} is stale; the record is at version {current.version}. "
                "Read it again and re-apply your change.",
                current_version=current.version,
            )
        try:
            details, changed = apply_changes(current.details, dict(changes))
        except InvalidPatient as exc:
            raise InvalidPatientProblem(str(exc)) from exc
        if not changed:
            return current
        try:
            stored = await repository(runtime, session).update(
                current, details, expected_version=version, now=runtime.clock.now()
            )
        except StaleVersion as exc:
            raise Conflict("The record changed meanwhile; read it again.") from exc
        await _publish(
            runtime,
            session,
            caller,
            stored,
            PatientUpdated(
                patient_id=stored.id,
                org_id=stored.org_id,
                changed_fields=changed,
                version=stored.version,
                updated_at=stored.updated_at,
            ),
        )
    return stored


def _search_keys(query: PatientQuery) -> tuple[list[SearchKey], list[str]]:
    """The blind-index keys of a query, and the names of the keys used (for the audit)."""
    keys: list[SearchKey] = []
    used: list[str] = []
    if query.family is not None and query.given is not None and query.birth_date is not None:
        keys.append(name_birth_key(query.family, query.given, query.birth_date))
        used.append("name+birth_date")
    elif query.family is not None or query.given is not None or query.birth_date is not None:
        raise InvalidPatientProblem(
            "Searching by name needs family, given and birth_date together."
        )
    if query.phone is not None:
        keys.append(SearchKey("phone", normalize_phone(query.phone)))
        used.append("phone")
    if query.email is not None:
        keys.append(SearchKey("email", normalize_email(query.email)))
        used.append("email")
    if not keys:
        raise InvalidPatientProblem(
            "Give at least one search key: family+given+birth_date, phone, or email."
        )
    return keys, used


async def search_patients(
    runtime: Runtime, session: AsyncSession, caller: Caller, query: PatientQuery
) -> list[StoredPatient]:
    """The patients of the caller's locations matching the query exactly; the audit
    record names the keys used (never their values) and every patient disclosed."""
    keys, used = _search_keys(query)
    principal = caller.principal
    entry = AuditEntry(
        action="query",
        resource_type=RESOURCE,
        phi_categories=disclosed(principal, SEARCH),
        query_fingerprint=fingerprint_query(used),
    )
    async with recorder_of(runtime).scope(session, principal, entry, **caller.meta):
        if principal.is_patient:
            raise Forbidden("A patient account cannot search patients.")
        found = await repository(runtime, session).find(
            principal.org_id, keys, limit=query.limit, locations=_search_locations(principal)
        )
        # Never reveal a record outside the caller's scope, whatever the query matched.
        found = [p for p in found if principal.allows_patient(p.id, p.location_id)]
        entry.disclose_patients(p.id for p in found)
        entry.resource_id = entry.patient_id
    return found


async def merge_patient(
    runtime: Runtime,
    session: AsyncSession,
    caller: Caller,
    patient_id: str,
    *,
    merged_patient_id: str,
    version: int,
) -> StoredPatient:
    """Merge the duplicate `merged_patient_id` into `patient_id` (at `version`); the
    duplicate is retired as merged; `PatientMerged`."""
    if merged_patient_id == patient_id:
        raise InvalidPatientProblem("A patient cannot be merged into itself.")
    principal = caller.principal
    entry = AuditEntry(
        action="merge",
        resource_type=RESOURCE,
        phi_categories=ALL_CATEGORIES,
        patient_id=patient_id,
        resource_id=patient_id,
        extra_patient_ids=[merged_patient_id],
    )
    async with recorder_of(runtime).scope(session, principal, entry, **caller.meta):
        repo = repository(runtime, session)
        # Lock both rows in a fixed order so concurrent merges cannot deadlock.
        first, second = sorted([patient_id, merged_patient_id])
        locked = {
            pid: await _load(repo, principal.org_id, pid, for_update=True)
            for pid in (first, second)
        }
        surviving, merged = locked[patient_id], locked[merged_patient_id]
        for record in (surviving, merged):
            principal.can_access_patient(record.id, record.location_id)
        for record in (surviving, merged):
            if record.status is not PatientStatus.ACTIVE:
                raise Conflict(
                    f"Patient {record.id} is already merged into {record.merged_into_id}."
                )
        if surviving.version != version:
            raise Conflict(
                f"Version {version} is stale; the record is at version {surviving.version}.",
                current_version=surviving.version,
            )
        now = runtime.clock.now()
        stored = await repo.update(
            surviving,
            merge_details(surviving.details, merged.details),
            expected_version=surviving.version,
            now=now,
        )
        await repo.update(
            merged,
            merged.details,
            expected_version=merged.version,
            now=now,
            status=PatientStatus.MERGED,
            merged_into_id=surviving.id,
        )
        await move_to_survivor(
            runtime,
            session,
            principal,
            org_id=principal.org_id,
            merged_patient_id=merged.id,
            surviving_patient_id=surviving.id,
            **caller.meta,
        )
        await runtime.outbox.add(
            session,
            PatientMerged(
                surviving_patient_id=surviving.id,
                merged_patient_id=merged.id,
                org_id=principal.org_id,
                merged_at=now,
            ),
            org_id=principal.org_id,
            correlation_id=caller.request_id,
        )
    return stored
