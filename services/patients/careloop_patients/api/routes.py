"""Register, read, update, search and merge patients. Every call is audited.

Authorization happens here, not only at the gateway: each route requires its
permission from the permission table (`require`, MFA included), then checks the
object: tenant (another organization's patient is a 404), location scope (403),
a patient account's own record (403), and leaves out the PHI categories the
caller's roles may not see (minimum necessary).

Break-glass: a provider whose token carries an active grant for a patient outside
their locations may read and update that one patient; such a request is audited
with purpose of use `ETREAT` (`AuthenticatedPrincipal.acting_for`).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from careloop_contracts import PatientMerged, PatientRegistered, PatientUpdated
from careloop_kit.audit import (
    AuditEntry,
    fingerprint_query,
    recorder_of,
    request_meta,
)
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal, require, visible_categories
from careloop_kit.crypto import BlindIndexer, KeyRing
from careloop_kit.problems import Conflict, Forbidden, NotFound, ProblemError
from careloop_kit.service import RuntimeDep, SessionDep
from careloop_patients.api.schemas import (
    MAX_PAGE,
    AddressIn,
    ContactPreferencesIn,
    NameIn,
    PatientCreate,
    PatientMerge,
    PatientPage,
    PatientRead,
    PatientSearch,
    PatientUpdate,
)
from careloop_patients.domain.patient import (
    ALL_CATEGORIES,
    FIELD_CATEGORIES,
    Address,
    ContactPreferences,
    HumanName,
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

router = APIRouter(prefix="/patients", tags=["patients"])

RESOURCE = "Patient"


CREATE, READ, UPDATE, SEARCH, MERGE = (
    "patients:create",
    "patients:read",
    "patients:update",
    "patients:search",
    "patients:merge",
)

Creator = Annotated[AuthenticatedPrincipal, Depends(require(CREATE, mfa=True))]
Reader = Annotated[AuthenticatedPrincipal, Depends(require(READ, mfa=True))]
Updater = Annotated[AuthenticatedPrincipal, Depends(require(UPDATE, mfa=True))]
Searcher = Annotated[AuthenticatedPrincipal, Depends(require(SEARCH, mfa=True))]
Merger = Annotated[AuthenticatedPrincipal, Depends(require(MERGE, mfa=True))]

# Fields shown as an empty list rather than null when their category is withheld.
_LIST_FIELDS = frozenset({"phones", "emails"})


class InvalidPatientProblem(ProblemError):
    status, title, slug = 422, "Invalid patient", "invalid-patient"


def _disclosed(principal: AuthenticatedPrincipal, permission: str) -> list[str]:
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


def _repository(runtime: RuntimeDep, session: SessionDep) -> PatientRepository:
    keys: KeyRing = runtime.state["keys"]
    indexer: BlindIndexer = runtime.state["indexer"]
    return PatientRepository(session, keys, indexer)


def _name(n: NameIn) -> HumanName:
    return HumanName(family=n.family.strip(), given=tuple(g.strip() for g in n.given))


def _address(a: AddressIn | None) -> Address | None:
    if a is None:
        return None
    return Address(
        line=tuple(a.line), city=a.city, state=a.state, postal_code=a.postal_code, country=a.country
    )


def _preferences(p: ContactPreferencesIn) -> ContactPreferences:
    return ContactPreferences(
        allowed_channels=tuple(p.allowed_channels),
        preferred_channel=p.preferred_channel,
        allow_automated_messages=p.allow_automated_messages,
    )


def _read(stored: StoredPatient, disclosed: list[str]) -> PatientRead:
    """The response body, with the fields of undisclosed PHI categories left out."""
    d = stored.details
    body: dict[str, Any] = {
        "id": stored.id,
        "org_id": stored.org_id,
        "location_id": stored.location_id,
        "status": stored.status,
        "merged_into_id": stored.merged_into_id,
        "version": stored.version,
        "name": {"family": d.name.family, "given": list(d.name.given)},
        "birth_date": d.birth_date,
        "sex": d.sex,
        "phones": list(d.phones),
        "emails": list(d.emails),
        "address": None
        if d.address is None
        else {
            "line": list(d.address.line),
            "city": d.address.city,
            "state": d.address.state,
            "postal_code": d.address.postal_code,
            "country": d.address.country,
        },
        "preferred_language": d.preferred_language,
        "preferences": {
            "allowed_channels": list(d.preferences.allowed_channels),
            "preferred_channel": d.preferences.preferred_channel,
            "allow_automated_messages": d.preferences.allow_automated_messages,
        },
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
    }
    for field_name, category in FIELD_CATEGORIES.items():
        if category.value not in disclosed:
            body[field_name] = [] if field_name in _LIST_FIELDS else None
    body["withheld_categories"] = [c for c in ALL_CATEGORIES if c not in disclosed]
    return PatientRead.model_validate(body)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PatientRead)
async def register_patient(
    body: PatientCreate,
    request: Request,
    principal: Creator,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientRead:
    """Register a patient."""
    repo = _repository(runtime, session)
    entry = AuditEntry(action="create", resource_type=RESOURCE, phi_categories=ALL_CATEGORIES)
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        # The registering location must be in scope; no location needs every location.
        principal.can_access_location(body.location_id)
        details = PatientDetails(
            name=_name(body.name),
            birth_date=body.birth_date,
            sex=body.sex,
            phones=tuple(body.phones),
            emails=tuple(str(e) for e in body.emails),
            address=_address(body.address),
            preferred_language=body.preferred_language,
            preferences=_preferences(body.preferences),
        )
        try:
            validate(details)
        except InvalidPatient as exc:
            raise InvalidPatientProblem(str(exc)) from exc
        stored = await repo.add(
            org_id=principal.org_id,
            location_id=body.location_id,
            details=details,
            now=runtime.clock.now(),
        )
        entry.patient_id = entry.resource_id = stored.id
        await runtime.outbox.add(
            session,
            PatientRegistered(
                patient_id=stored.id,
                org_id=stored.org_id,
                location_id=stored.location_id,
                registered_at=stored.created_at,
            ),
            org_id=stored.org_id,
            location_id=stored.location_id,
            correlation_id=entry_request_id(request),
        )
    return _read(stored, _disclosed(principal, CREATE))


def entry_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _load(
    repo: PatientRepository, org_id: str, patient_id: str, *, for_update: bool = False
) -> StoredPatient:
    stored = await repo.get(org_id, patient_id, for_update=for_update)
    if stored is None:
        # Another tenant's patient is indistinguishable from a missing one.
        raise NotFound(f"No patient {patient_id} in this organization.")
    return stored


@router.get("/{patient_id}", response_model=PatientRead)
async def read_patient(
    patient_id: str,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientRead:
    """Read one patient (only the PHI categories the caller's roles may see)."""
    repo = _repository(runtime, session)
    disclosed = _disclosed(principal, READ)
    entry = AuditEntry(
        action="read",
        resource_type=RESOURCE,
        phi_categories=disclosed,
        patient_id=patient_id,
        resource_id=patient_id,
    )
    acting = principal.acting_for(patient_id)
    async with recorder_of(runtime).scope(session, acting, entry, **request_meta(request)):
        _only_own_record(principal, patient_id)
        stored = await _load(repo, principal.org_id, patient_id)
        principal.can_access_patient(stored.id, stored.location_id)
    return _read(stored, disclosed)


@router.patch("/{patient_id}", response_model=PatientRead)
async def update_patient(
    patient_id: str,
    body: PatientUpdate,
    request: Request,
    principal: Updater,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientRead:
    """Change fields of a patient (send the version you read)."""
    repo = _repository(runtime, session)
    fields = body.model_dump(exclude_unset=True, exclude={"version"})
    entry = AuditEntry(
        action="update",
        resource_type=RESOURCE,
        phi_categories=categories_of(list(fields)) or ALL_CATEGORIES,
        patient_id=patient_id,
        resource_id=patient_id,
    )
    acting = principal.acting_for(patient_id)
    async with recorder_of(runtime).scope(session, acting, entry, **request_meta(request)):
        _only_own_record(principal, patient_id)
        current = await _load(repo, principal.org_id, patient_id, for_update=True)
        principal.can_access_patient(current.id, current.location_id)
        if current.status is not PatientStatus.ACTIVE:
            raise Conflict(
                f"Patient {patient_id} was merged into {current.merged_into_id}; "
                "update that record."
            )
        if current.version != body.version:
            raise Conflict(
                f"Version {body.version} is stale; the record is at version {current.version}. "
                "Read it again and re-apply your change.",
                current_version=current.version,
            )
        changes: dict[str, object] = {}
        if body.name is not None:
            changes["name"] = _name(body.name)
        if body.birth_date is not None:
            changes["birth_date"] = body.birth_date
        if body.sex is not None:
            changes["sex"] = body.sex
        if body.phones is not None:
            changes["phones"] = tuple(body.phones)
        if body.emails is not None:
            changes["emails"] = tuple(str(e) for e in body.emails)
        if "address" in fields:
            changes["address"] = _address(body.address)
        if "preferred_language" in fields:
            changes["preferred_language"] = body.preferred_language
        if body.preferences is not None:
            changes["preferences"] = _preferences(body.preferences)
        try:
            details, changed = apply_changes(current.details, changes)
        except InvalidPatient as exc:
            raise InvalidPatientProblem(str(exc)) from exc
        if not changed:
            return _read(current, _disclosed(principal, UPDATE))
        try:
            stored = await repo.update(
                current, details, expected_version=body.version, now=runtime.clock.now()
            )
        except StaleVersion as exc:
            raise Conflict("The record changed meanwhile; read it again.") from exc
        await runtime.outbox.add(
            session,
            PatientUpdated(
                patient_id=stored.id,
                org_id=stored.org_id,
                changed_fields=changed,
                version=stored.version,
                updated_at=stored.updated_at,
            ),
            org_id=stored.org_id,
            location_id=stored.location_id,
            correlation_id=entry_request_id(request),
        )
    return _read(stored, _disclosed(principal, UPDATE))


@router.post("/_search", response_model=PatientPage)
async def search_patients(
    body: PatientSearch,
    request: Request,
    principal: Searcher,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientPage:
    """Find patients by exact name + birth date, phone or email, among the patients of
    the caller's locations (only the PHI categories the caller's roles may see).

    The keys travel in the body, as FHIR's `POST [type]/_search` does, so they stay out
    of URLs and every log that records one."""
    return await _search(body, request, principal, runtime, session)


@router.get("", response_model=PatientPage)
async def search_patients_by_query(
    request: Request,
    principal: Searcher,
    runtime: RuntimeDep,
    session: SessionDep,
    family: Annotated[str | None, Query(max_length=100)] = None,
    given: Annotated[str | None, Query(max_length=100)] = None,
    birth_date: date | None = None,
    phone: Annotated[str | None, Query(max_length=40)] = None,
    email: Annotated[str | None, Query(max_length=254)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PatientPage:
    """Find patients with the keys in the query string (kept for existing clients; prefer
    `POST /patients/_search`, which keeps them out of URLs)."""
    keys = PatientSearch(
        family=family, given=given, birth_date=birth_date, phone=phone, email=email, limit=limit
    )
    return await _search(keys, request, principal, runtime, session)


async def _search(
    search: PatientSearch,
    request: Request,
    principal: AuthenticatedPrincipal,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientPage:
    keys: list[SearchKey] = []
    used: list[str] = []
    family, given, birth_date = search.family, search.given, search.birth_date
    if family is not None and given is not None and birth_date is not None:
        keys.append(name_birth_key(family, given, birth_date))
        used.append("name+birth_date")
    elif family is not None or given is not None or birth_date is not None:
        raise InvalidPatientProblem(
            "Searching by name needs family, given and birth_date together."
        )
    if search.phone is not None:
        keys.append(SearchKey("phone", normalize_phone(search.phone)))
        used.append("phone")
    if search.email is not None:
        keys.append(SearchKey("email", normalize_email(search.email)))
        used.append("email")
    if not keys:
        raise InvalidPatientProblem(
            "Give at least one search key: family+given+birth_date, phone, or email."
        )
    repo = _repository(runtime, session)
    disclosed = _disclosed(principal, SEARCH)
    entry = AuditEntry(
        action="query",
        resource_type=RESOURCE,
        phi_categories=disclosed,
        query_fingerprint=fingerprint_query(used),
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        if principal.is_patient:
            raise Forbidden("A patient account cannot search patients.")
        found = await repo.find(
            principal.org_id, keys, limit=search.limit, locations=_search_locations(principal)
        )
        # Never reveal a record outside the caller's scope, whatever the query matched.
        found = [p for p in found if principal.allows_patient(p.id, p.location_id)]
        entry.disclose_patients(p.id for p in found)
        entry.resource_id = entry.patient_id
    return PatientPage(items=[_read(p, disclosed) for p in found], count=len(found))


@router.post("/{patient_id}/merge", response_model=PatientRead)
async def merge_patient(
    patient_id: str,
    body: PatientMerge,
    request: Request,
    principal: Merger,
    runtime: RuntimeDep,
    session: SessionDep,
) -> PatientRead:
    """Merge a duplicate record into this patient."""
    if body.merged_patient_id == patient_id:
        raise InvalidPatientProblem("A patient cannot be merged into itself.")
    repo = _repository(runtime, session)
    entry = AuditEntry(
        action="merge",
        resource_type=RESOURCE,
        phi_categories=ALL_CATEGORIES,
        patient_id=patient_id,
        resource_id=patient_id,
        extra_patient_ids=[body.merged_patient_id],
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        # Lock both rows in a fixed order so concurrent merges cannot deadlock.
        first, second = sorted([patient_id, body.merged_patient_id])
        locked = {
            pid: await _load(repo, principal.org_id, pid, for_update=True)
            for pid in (first, second)
        }
        surviving, merged = locked[patient_id], locked[body.merged_patient_id]
        for record in (surviving, merged):
            principal.can_access_patient(record.id, record.location_id)
        for record in (surviving, merged):
            if record.status is not PatientStatus.ACTIVE:
                raise Conflict(
                    f"Patient {record.id} is already merged into {record.merged_into_id}."
                )
        if surviving.version != body.version:
            raise Conflict(
                f"Version {body.version} is stale; the record is at version {surviving.version}.",
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
        await runtime.outbox.add(
            session,
            PatientMerged(
                surviving_patient_id=surviving.id,
                merged_patient_id=merged.id,
                org_id=principal.org_id,
                merged_at=now,
            ),
            org_id=principal.org_id,
            correlation_id=entry_request_id(request),
        )
    return _read(stored, _disclosed(principal, MERGE))
