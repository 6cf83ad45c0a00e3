"""The provider directory: add, change, read and list entries of the organization.

Entries hold no PHI (providers, organizations and their practice contacts), so they are
not audited; the permission check still applies (`referrals:manage` to change,
`referrals:read` to read).
"""

from __future__ import annotations

from dataclasses import replace

from careloop_kit.context import RequestContext
from careloop_kit.problems import Conflict, NotFound
from careloop_kit.repository import new_id
from careloop_referrals.domain.directory import (
    Channel,
    Contact,
    DirectoryEntry,
    EntryKind,
    InvalidEntry,
    checked,
)
from careloop_referrals.store.directory import NpiTaken
from careloop_referrals.store.repository import Repositories
from careloop_referrals.usecases.common import InvalidReferral, settings_of

Context = RequestContext[Repositories]


def _valid(entry: DirectoryEntry) -> DirectoryEntry:
    try:
        return checked(entry)
    except InvalidEntry as exc:
        raise InvalidReferral(str(exc)) from exc


def _npi_taken(npi: str | None) -> Conflict:
    return Conflict(
        f"The directory already lists NPI {npi}: change that entry instead "
        "(GET /referrals/directory?npi=...).",
        npi=npi,
    )


async def add_entry(
    ctx: Context,
    *,
    kind: EntryKind,
    npi: str | None,
    name: str,
    specialty: str | None,
    contact: Contact,
    preferred_channel: Channel,
    internal: bool,
) -> DirectoryEntry:
    entry = _valid(
        DirectoryEntry(
            id=new_id(),
            org_id=ctx.principal.org_id,
            kind=kind,
            npi=npi,
            name=name,
            specialty=specialty,
            contact=contact,
            preferred_channel=preferred_channel,
            internal=internal,
        )
    )
    try:
        await ctx.repos.directory.add(entry, now=ctx.runtime.clock.now())
    except NpiTaken as exc:
        raise _npi_taken(entry.npi) from exc
    return entry


async def read_entry(ctx: Context, entry_id: str) -> DirectoryEntry:
    found = await ctx.repos.directory.get(ctx.principal.org_id, entry_id)
    if found is None:
        raise NotFound(f"No directory entry {entry_id} in this organization.")
    return found


async def change_entry(ctx: Context, entry_id: str, **changes: object) -> DirectoryEntry:
    """The entry with `changes` (fields of `DirectoryEntry`) applied and checked again."""
    entry = _valid(replace(await read_entry(ctx, entry_id), **changes))  # type: ignore[arg-type]
    try:
        await ctx.repos.directory.save(entry, now=ctx.runtime.clock.now())
    except NpiTaken as exc:
        raise _npi_taken(entry.npi) from exc
    return entry


async def list_entries(
    ctx: Context, *, npi: str | None, specialty: str | None, after: str | None, limit: int
) -> tuple[list[DirectoryEntry], str | None]:
    """A page of entries in id order, and the `after` of the next page (None: last)."""
    size = min(limit, settings_of(ctx.runtime).max_page_size)
    found = await ctx.repos.directory.page(
        ctx.principal.org_id, npi=npi, specialty=specialty, after=after, limit=size
    )
    return found, found[-1].id if len(found) == size else None
