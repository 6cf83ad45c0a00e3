"""The portal inbox: a patient reads the messages sent to it; staff read a patient's.

`messages:read` (a PHI permission). A patient account reaches only its own inbox (the
token's patient id), whatever the location; staff only the items of locations in their
scope, like appointments in scheduling. Opening an item as the patient marks it read;
staff reading it does not. Every read is audited (resource `Communication`, category
`contact`, as messaging files its other patient communications), refusals included.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from careloop_kit.audit import AuditEntry, recorder_of, request_meta
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.problems import Forbidden, NotFound
from careloop_kit.service import Runtime, RuntimeDep, SessionDep
from careloop_messaging.store.repository import Inbox, InboxCipher, InboxItem

router = APIRouter(tags=["inbox"])

INBOX_CIPHER_KEY = "inbox_cipher"
RESOURCE = "Communication"
PHI = ["contact"]
MAX_PAGE = 100

Reader = Annotated[AuthenticatedPrincipal, Depends(require("messages:read", mfa=True))]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


class InboxItemRead(BaseModel):
    id: str
    message_id: str
    patient_id: str
    location_id: str | None
    sender_name: str
    subject: str | None
    body: str
    delivered_at: datetime
    read_at: datetime | None


class InboxPage(BaseModel):
    items: list[InboxItemRead]
    count: int
    unread: int


def _inbox(runtime: Runtime, session: SessionDep) -> Inbox:
    cipher: InboxCipher = runtime.state[INBOX_CIPHER_KEY]
    return Inbox(session, cipher)


def _read(item: InboxItem) -> InboxItemRead:
    return InboxItemRead(
        id=item.id,
        message_id=item.message_id,
        patient_id=item.patient_id,
        location_id=item.location_id,
        sender_name=item.sender_name,
        subject=item.subject,
        body=item.body,
        delivered_at=item.delivered_at,
        read_at=item.read_at,
    )


def _page(items: list[InboxItem]) -> InboxPage:
    return InboxPage(
        items=[_read(i) for i in items],
        count=len(items),
        unread=sum(1 for i in items if i.read_at is None),
    )


@router.get("/inbox", response_model=InboxPage)
async def read_own_inbox(
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    limit: Limit = 50,
) -> InboxPage:
    """List the signed-in patient's inbox, newest first."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=PHI, patient_id=principal.patient_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        if not principal.is_patient or principal.patient_id is None:
            raise Forbidden("Staff read a patient's inbox at /patients/{patient_id}/inbox.")
        items = await _inbox(runtime, session).of_patient(
            principal.org_id, principal.patient_id, limit=limit
        )
    return _page(items)


@router.get("/patients/{patient_id}/inbox", response_model=InboxPage)
async def read_patient_inbox(
    patient_id: str,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    limit: Limit = 50,
) -> InboxPage:
    """List a patient's inbox (staff: the items of locations in scope; a patient: its own)."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=PHI, patient_id=patient_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        _, locations = principal.listing_scope(patient_id)
        items = await _inbox(runtime, session).of_patient(
            principal.org_id, patient_id, limit=limit, locations=locations
        )
    return _page(items)


@router.get("/inbox/{item_id}", response_model=InboxItemRead)
async def read_inbox_item(
    item_id: str,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
) -> InboxItemRead:
    """Read one inbox item; the patient opening its own item marks it read."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=PHI, resource_id=item_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        inbox = _inbox(runtime, session)
        item = await inbox.get(principal.org_id, item_id)
        if item is None or (principal.is_patient and item.patient_id != principal.patient_id):
            # Another tenant's or another patient's item is not acknowledged to exist.
            raise NotFound(f"No inbox item {item_id}.")
        entry.patient_id = item.patient_id
        principal.can_access_patient(item.patient_id, item.location_id)
        if principal.is_patient and item.read_at is None:
            now = runtime.clock.now()
            await inbox.mark_read(item.id, now)
            item = replace(item, read_at=now)
    return _read(item)
