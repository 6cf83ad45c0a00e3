"""The portal inbox: a patient reads the messages sent to it; staff read a patient's.

`messages:read` (a PHI permission). A patient account reaches only its own inbox (the
token's patient id), whatever the location; staff only the items of locations in their
scope, like appointments in scheduling. Opening an item as the patient marks it read;
staff reading it does not. Every read is audited (resource `Communication`, category
`contact`, as messaging files its other patient communications), refusals included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from careloop_kit.audit import request_meta
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.service import RuntimeDep, SessionDep
from careloop_messaging.store.repository import InboxItem
from careloop_messaging.usecases.inbox import open_inbox_item, own_inbox, patient_inbox

router = APIRouter(tags=["inbox"])

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
    items = await own_inbox(runtime, session, principal, limit=limit, meta=request_meta(request))
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
    items = await patient_inbox(
        runtime, session, principal, patient_id, limit=limit, meta=request_meta(request)
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
    item = await open_inbox_item(runtime, session, principal, item_id, meta=request_meta(request))
    return _read(item)
