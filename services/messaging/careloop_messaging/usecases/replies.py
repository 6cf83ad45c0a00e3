"""A patient's answer to one of our messages becomes `reply.received.v2`, whichever way
it came (a keyword by SMS, a tap on the secure link): one event shape for scheduling to
act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.messaging import ReplyIntentV2, ReplyReceivedV2, ReplyVia
from careloop_kit.service import Runtime
from careloop_messaging.domain.outreach import message_kind, offer_id_of
from careloop_messaging.domain.templates import MessageKind
from careloop_messaging.store.repository import StoredMessage


@dataclass(frozen=True)
class Reply:
    """A patient's answer to one of our messages, whichever way it came."""

    reply_id: str
    intent: ReplyIntentV2
    choice: int | None
    via: ReplyVia
    received_at: datetime


async def publish_reply(
    runtime: Runtime, session: AsyncSession, answered: StoredMessage, reply: Reply
) -> None:
    """Stage the answer to `answered` in the outbox, in the caller's transaction (the
    caller audits it there too)."""
    is_waitlist_offer = message_kind(answered.touch) is MessageKind.WAITLIST_OFFER
    await runtime.outbox.add(
        session,
        ReplyReceivedV2(
            **asdict(reply),
            org_id=answered.org_id,
            patient_id=answered.patient_id,
            message_id=answered.id,
            appointment_id=answered.appointment_id,
            offer_id=offer_id_of(answered.touch_key) if is_waitlist_offer else None,
        ),
        org_id=answered.org_id,
        location_id=answered.location_id,
    )
