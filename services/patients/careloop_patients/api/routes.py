"""Register, read, update, search and merge patients: parse the request, call the use
case (`usecases/patients.py`, which authorizes the object and audits every call), shape
the response.

Each route requires its permission from the permission table first (`require`, MFA
included); the response leaves out the PHI categories the caller's roles may not see
(minimum necessary).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.auth import require
from careloop_kit.context import RequestContext, request_context
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
    PatientDetails,
)
from careloop_patients.store.repository import StoredPatient
from careloop_patients.usecases import patients as steps
from careloop_patients.usecases.patients import (
    CREATE,
    MERGE,
    READ,
    SEARCH,
    UPDATE,
    PatientQuery,
    disclosed,
)

router = APIRouter(prefix="/patients", tags=["patients"])

# No repositories in the context: the use cases build theirs with the service's keys.
Context = RequestContext[None]


def _no_repositories(session: AsyncSession) -> None:
    return None


def _context(permission: str) -> Any:
    """The context of a route that requires `permission` (with MFA)."""
    return Depends(request_context(require(permission, mfa=True), _no_repositories))


Creator = Annotated[Context, _context(CREATE)]
Reader = Annotated[Context, _context(READ)]
Updater = Annotated[Context, _context(UPDATE)]
Searcher = Annotated[Context, _context(SEARCH)]
Merger = Annotated[Context, _context(MERGE)]

# Fields shown as an empty list rather than null when their category is withheld.
_LIST_FIELDS = frozenset({"phones", "emails"})


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


def _read(stored: StoredPatient, shown: list[str]) -> PatientRead:
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
        if category.value not in shown:
            body[field_name] = [] if field_name in _LIST_FIELDS else None
    body["withheld_categories"] = [c for c in ALL_CATEGORIES if c not in shown]
    return PatientRead.model_validate(body)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PatientRead)
async def register_patient(body: PatientCreate, ctx: Creator) -> PatientRead:
    """Register a patient."""
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
    stored = await steps.register_patient(
        ctx.runtime, ctx.session, ctx.caller, location_id=body.location_id, details=details
    )
    return _read(stored, disclosed(ctx.principal, CREATE))


@router.get("/{patient_id}", response_model=PatientRead)
async def read_patient(patient_id: str, ctx: Reader) -> PatientRead:
    """Read one patient (only the PHI categories the caller's roles may see)."""
    stored = await steps.read_patient(ctx.runtime, ctx.session, ctx.caller, patient_id)
    return _read(stored, disclosed(ctx.principal, READ))


@router.patch("/{patient_id}", response_model=PatientRead)
async def update_patient(patient_id: str, body: PatientUpdate, ctx: Updater) -> PatientRead:
    """Change fields of a patient (send the version you read)."""
    fields = body.model_dump(exclude_unset=True, exclude={"version"})
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
    stored = await steps.update_patient(
        ctx.runtime,
        ctx.session,
        ctx.caller,
        patient_id,
        version=body.version,
        changes=changes,
        requested_fields=list(fields),
    )
    return _read(stored, disclosed(ctx.principal, UPDATE))


@router.post("/_search", response_model=PatientPage)
async def search_patients(body: PatientSearch, ctx: Searcher) -> PatientPage:
    """Find patients by exact name + birth date, phone or email, among the patients of
    the caller's locations (only the PHI categories the caller's roles may see).

    The keys travel in the body, as FHIR's `POST [type]/_search` does, so they stay out
    of URLs and every log that records one."""
    query = PatientQuery(**body.model_dump())
    return await _search(query, ctx)


@router.get("", response_model=PatientPage)
async def search_patients_by_query(
    ctx: Searcher,
    family: Annotated[str | None, Query(max_length=100)] = None,
    given: Annotated[str | None, Query(max_length=100)] = None,
    birth_date: date | None = None,
    phone: Annotated[str | None, Query(max_length=40)] = None,
    email: Annotated[str | None, Query(max_length=254)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PatientPage:
    """Find patients with the keys in the query string (kept for existing clients; prefer
    `POST /patients/_search`, which keeps them out of URLs)."""
    query = PatientQuery(
        family=family, given=given, birth_date=birth_date, phone=phone, email=email, limit=limit
    )
    return await _search(query, ctx)


async def _search(query: PatientQuery, ctx: Context) -> PatientPage:
    found = await steps.search_patients(ctx.runtime, ctx.session, ctx.caller, query)
    shown = disclosed(ctx.principal, SEARCH)
    return PatientPage(items=[_read(p, shown) for p in found], count=len(found))


@router.post("/{patient_id}/merge", response_model=PatientRead)
async def merge_patient(patient_id: str, body: PatientMerge, ctx: Merger) -> PatientRead:
    """Merge a duplicate record into this patient."""
    stored = await steps.merge_patient(
        ctx.runtime,
        ctx.session,
        ctx.caller,
        patient_id,
        merged_patient_id=body.merged_patient_id,
        version=body.version,
    )
    return _read(stored, disclosed(ctx.principal, MERGE))
