"""Secure one-time links: which message a token opens, what has been done about it, and
the one action a link may take.

The token is the credential (message id + HMAC under a key in Vault, see `SecureLinks`).
Its holder is taken to be the patient the message was sent to: reads and actions are
audited as that patient, like a keyword reply (`usecases.sms`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.messaging import CallbackRequested, ReplyIntentV2
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL, CONTACT
from careloop_kit.service import Runtime
from careloop_messaging.domain.outreach import (
    WAITLIST_CLOSED_TOUCH,
    MessageStatus,
    message_kind,
    offer_id_of,
    referral_id_of,
    waitlist_touch_key,
)
from careloop_messaging.domain.templates import MessageKind
from careloop_messaging.store.repository import Messages, StoredMessage
from careloop_messaging.usecases.context import secure_links
from careloop_messaging.usecases.replies import Reply, publish_reply

WAITLIST_KINDS = frozenset({MessageKind.WAITLIST_OFFER, MessageKind.WAITLIST_CLOSED})
BOOK_BY_PHONE_KINDS = frozenset({MessageKind.REFERRAL_CONTACT, MessageKind.CHECKUP})
"""Messages asking the patient to book a visit they cannot book online (a referral, a
check-up that is due): nothing but the message's own row says what was done."""
UNBOOKED_KINDS = WAITLIST_KINDS | BOOK_BY_PHONE_KINDS
"""Messages about something not (yet) an appointment: their link opens all the same."""


@dataclass(frozen=True)
class LinkHistory:
    """What messaging knows happened since the message went out."""

    latest: tuple[str, int | None, datetime] | None
    """The last link action about the message's appointment (action, choice, when)."""
    closed: bool
    """A waitlist offer is known to be gone."""


async def open_link(
    runtime: Runtime, session: AsyncSession, token: str, *, lock: bool
) -> StoredMessage | None:
    """The message a token opens, or None (malformed, forged, unknown, or never sent);
    `lock` holds its row for the action that follows."""
    message_id = secure_links(runtime).message_id(token)
    if message_id is None:
        return None
    messages = Messages(session)
    stored = await (messages.get_for_update(message_id) if lock else messages.get(message_id))
    if stored is None or stored.status is MessageStatus.SKIPPED:
        return None
    if stored.appointment_id is None and message_kind(stored.touch) not in UNBOOKED_KINDS:
        return None
    return stored


def link_expires_at(stored: StoredMessage) -> datetime:
    """A reminder's link lapses when the visit starts, an offer's when the offer does (a
    waitlist offer's at the latest when its time starts)."""
    if message_kind(stored.touch) in WAITLIST_KINDS and stored.offer_expires_at is not None:
        return min(stored.offer_expires_at, stored.start_at)
    return stored.offer_expires_at or stored.start_at


async def link_history(session: AsyncSession, stored: StoredMessage) -> LinkHistory:
    """The appointment's last link action, or for a waitlist offer whether its "gone"
    message exists (any status: even unsent, it means scheduling closed the offer as
    taken or answered too late)."""
    messages = Messages(session)
    kind = message_kind(stored.touch)
    if kind is MessageKind.WAITLIST_OFFER:
        gone = waitlist_touch_key(offer_id_of(stored.touch_key), WAITLIST_CLOSED_TOUCH)
        return LinkHistory(None, closed=await messages.touch_exists(gone))
    if kind is MessageKind.WAITLIST_CLOSED:
        return LinkHistory(None, closed=True)
    if kind in BOOK_BY_PHONE_KINDS:
        return LinkHistory(None, closed=False)  # its own row says what was done
    if stored.appointment_id is None:
        raise ValueError(f"message {stored.id} opens no link: it names no appointment")
    latest = await messages.latest_link_action(stored.org_id, stored.appointment_id)
    return LinkHistory(latest, closed=False)


async def record_link_viewed(
    runtime: Runtime, session: AsyncSession, stored: StoredMessage, *, meta: dict[str, Any]
) -> None:
    """Audit the page's view (it shows the visit's date and time)."""
    await _audit(
        runtime,
        session,
        stored,
        action="read",
        resource_id=stored.id,
        detail="secure link page viewed",
        phi=CLINICAL,
        meta=meta,
    )


async def use_link(
    runtime: Runtime,
    session: AsyncSession,
    stored: StoredMessage,
    *,
    action: ReplyIntentV2 | Literal["call_me"],
    choice: int | None,
    meta: dict[str, Any],
) -> datetime:
    """Spend the link on `action`: the row (locked by `open_link`), the event (a
    `reply.received.v2`, or for `call_me` a `callback.requested`) and the audit record in
    one transaction. Returns when it was used."""
    now = runtime.clock.now()
    reply_id = str(uuid.uuid4())
    await Messages(session).use_link(stored.id, action=action, choice=choice, now=now)
    if action == "call_me":
        await _publish_callback(runtime, session, stored, reply_id, now)
    else:
        reply = Reply(reply_id, action, choice, "link", now)
        await publish_reply(runtime, session, stored, reply)
    await _audit(
        runtime,
        session,
        stored,
        action="create",
        resource_id=reply_id,
        detail=f"{action} by secure link",
        phi=CONTACT,
        meta=meta,
    )
    return now


async def _publish_callback(
    runtime: Runtime, session: AsyncSession, stored: StoredMessage, request_id: str, at: datetime
) -> None:
    await runtime.outbox.add(
        session,
        CallbackRequested(
            request_id=request_id,
            org_id=stored.org_id,
            location_id=stored.location_id,
            patient_id=stored.patient_id,
            message_id=stored.id,
            subject_kind="referral",
            subject_id=referral_id_of(stored.touch_key),
            requested_at=at,
        ),
        org_id=stored.org_id,
        location_id=stored.location_id,
    )


async def _audit(
    runtime: Runtime,
    session: AsyncSession,
    stored: StoredMessage,
    *,
    action: str,
    resource_id: str,
    detail: str,
    phi: str,
    meta: dict[str, Any],
) -> None:
    who = Principal(actor_id=stored.patient_id, actor_type="patient", org_id=stored.org_id)
    entry = AuditEntry(
        action=action,
        resource_type="Communication",
        phi_categories=[phi],
        patient_id=stored.patient_id,
        resource_id=resource_id,
    )
    await recorder_of(runtime).record(session, who, entry, outcome_detail=detail, **meta)
