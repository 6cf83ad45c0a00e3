"""The provider directory: referring and receiving providers and organizations, with
their NPI (check digit verified), specialty, contact and preferred channel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from careloop_kit.api_types import IdStr, PageLimit
from careloop_referrals.api.common import ManageContext, ReadContext
from careloop_referrals.api.schemas import (
    DirectoryEntryCreate,
    DirectoryEntryRead,
    DirectoryEntryUpdate,
    DirectoryPage,
)
from careloop_referrals.domain.directory import Contact
from careloop_referrals.usecases import directory as steps

router = APIRouter(prefix="/referrals/directory", tags=["referral directory"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DirectoryEntryRead)
async def add_entry(body: DirectoryEntryCreate, ctx: ManageContext) -> DirectoryEntryRead:
    """Add a provider or organization to the directory."""
    entry = await steps.add_entry(
        ctx,
        kind=body.kind,
        npi=body.npi,
        name=body.name,
        specialty=body.specialty,
        contact=Contact(**body.contact.model_dump()),
        preferred_channel=body.preferred_channel,
        internal=body.internal,
    )
    return DirectoryEntryRead.model_validate(entry)


@router.get("", response_model=DirectoryPage)
async def list_entries(
    ctx: ReadContext,
    npi: Annotated[str | None, Query(pattern=r"^[0-9]{10}$")] = None,
    specialty: Annotated[str | None, Query(max_length=100)] = None,
    after: IdStr | None = None,
    limit: PageLimit = 50,
) -> DirectoryPage:
    """List directory entries in id order, optionally by NPI or specialty."""
    found, next_after = await steps.list_entries(
        ctx, npi=npi, specialty=specialty, after=after, limit=limit
    )
    items = [DirectoryEntryRead.model_validate(e) for e in found]
    return DirectoryPage(items=items, next_after=next_after)


@router.get("/{entry_id}", response_model=DirectoryEntryRead)
async def read_entry(entry_id: IdStr, ctx: ReadContext) -> DirectoryEntryRead:
    """Read one directory entry."""
    return DirectoryEntryRead.model_validate(await steps.read_entry(ctx, entry_id))


@router.patch("/{entry_id}", response_model=DirectoryEntryRead)
async def change_entry(
    entry_id: IdStr, body: DirectoryEntryUpdate, ctx: ManageContext
) -> DirectoryEntryRead:
    """Change a directory entry; the fields left out stay as they are."""
    changes: dict[str, object] = body.model_dump(exclude_unset=True, exclude={"contact"})
    if body.contact is not None:
        changes["contact"] = Contact(**body.contact.model_dump())
    return DirectoryEntryRead.model_validate(await steps.change_entry(ctx, entry_id, **changes))
