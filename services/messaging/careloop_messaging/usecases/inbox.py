"""Reading the portal inbox: a patient its own items, staff a patient's items in the
locations of their scope; items from a sensitive location (the flag scheduling's events
carried with the message) only to staff whose scope names that location, whatever
their other scopes (an org-wide scope is not enough: left out of lists, 403 on a
read). Every read is audited (resource `Communication`, category `contact`), refusals
included; a patient opening its own item marks it read."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.audit import AuditEntry
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden, NotFound
from careloop_kit.service import Runtime
from careloop_messaging.store.repository import Inbox, InboxItem
from careloop_messaging.usecases.context import inbox_cipher

RESOURCE = "Communication"
PHI = ["contact"]


SENSITIVE_REFUSAL = (
    "This message is from a sensitive location: only staff scoped to that location see it."
)


def _named(principal: AuthenticatedPrincipal) -> tuple[str, ...]:
    """The locations the caller's scope names itself: a sensitive location's items are
    shown only to its own staff, never on the strength of an every-location scope."""
    return tuple(loc for loc in principal.locations if loc != ALL_LOCATIONS)


def inbox_of(runtime: Runtime, session: AsyncSession) -> Inbox:
    """The inbox repository, with the field cipher `app.py` built at start-up."""
    return Inbox(session, inbox_cipher(runtime))


InboxContext = RequestContext[Inbox]


def _audit_entry(*, patient_id: str | None = None, resource_id: str | None = None) -> AuditEntry:
    """An audited read of the inbox, of a patient's items or of one item."""
    return AuditEntry(
        action="read",
        resource_type=RESOURCE,
        phi_categories=PHI,
        patient_id=patient_id,
        resource_id=resource_id,
    )


async def own_inbox(ctx: InboxContext, *, limit: int) -> list[InboxItem]:
    """The signed-in patient's inbox, newest first; staff are refused."""
    principal = ctx.principal
    async with ctx.audited(_audit_entry(patient_id=principal.patient_id)):
        if not principal.is_patient or principal.patient_id is None:
            raise Forbidden("Staff read a patient's inbox at /patients/{patient_id}/inbox.")
        return await ctx.repos.of_patient(principal.org_id, principal.patient_id, limit=limit)


async def patient_inbox(ctx: InboxContext, patient_id: str, *, limit: int) -> list[InboxItem]:
    """A patient's inbox: for staff the items of locations in scope, for a patient its own."""
    principal = ctx.principal
    async with ctx.audited(_audit_entry(patient_id=patient_id)):
        _, locations = principal.listing_scope(patient_id)
        return await ctx.repos.of_patient(
            principal.org_id,
            patient_id,
            limit=limit,
            locations=locations,
            sensitive_seen_at=None if principal.is_patient else _named(principal),
        )


async def open_inbox_item(ctx: InboxContext, item_id: str) -> InboxItem:
    """One inbox item; the patient opening its own unread item marks it read."""
    principal = ctx.principal
    entry = _audit_entry(resource_id=item_id)
    async with ctx.audited(entry):
        item = await ctx.repos.get(principal.org_id, item_id)
        if item is None or (principal.is_patient and item.patient_id != principal.patient_id):
            # Another tenant's or another patient's item is not acknowledged to exist.
            raise NotFound(f"No inbox item {item_id}.")
        entry.patient_id = item.patient_id
        principal.can_access_patient(item.patient_id, item.location_id)
        if (
            item.sensitive_location
            and not principal.is_patient
            and item.location_id not in _named(principal)
        ):
            raise Forbidden(SENSITIVE_REFUSAL)
        if principal.is_patient and item.read_at is None:
            now = ctx.runtime.clock.now()
            await ctx.repos.mark_read(item.id, now)
            item = replace(item, read_at=now)
    return item
