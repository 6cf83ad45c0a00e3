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

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from careloop_kit.auth import require
from careloop_kit.context import request_context
from careloop_messaging.store.repository import InboxItem
from careloop_messaging.usecases.inbox import (
    InboxContext,
    inbox_of,
    open_inbox_item,
    own_inbox,
    patient_inbox,
)

router = APIRouter(tags=["inbox"])

MAX_PAGE = 100

ReadContext = Annotated[
    InboxContext,
    Depends(request_context(require("messages:read", mfa=True), inbox_of)),
]
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
    return InboxItemRead.model_validate(item, from_attributes=True)


def _page(items: list[InboxItem]) -> InboxPage:
    return InboxPage(
        items=[_read(i) for i in items],
        count=len(items),
        unread=sum(1 for i in items if i.read_at is None),
    )


@router.get("/inbox", response_model=InboxPage)
async def read_own_inbox(ctx: ReadContext, limit: Limit = 50) -> InboxPage:
    """List the signed-in patient's inbox, newest first."""
    return _page(await own_inbox(ctx, limit=limit))


@router.get("/patients/{patient_id}/inbox", response_model=InboxPage)
async def read_patient_inbox(patient_id: str, ctx: ReadContext, limit: Limit = 50) -> InboxPage:
    """List a patient's inbox (staff: the items of locations in scope; a patient: its own)."""
    return _page(await patient_inbox(ctx, patient_id, limit=limit))


@router.get("/inbox/{item_id}", response_model=InboxItemRead)
async def read_inbox_item(item_id: str, ctx: ReadContext) -> InboxItemRead:
    """Read one inbox item; the patient opening its own item marks it read."""
    return _read(await open_inbox_item(ctx, item_id))
