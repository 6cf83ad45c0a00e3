"""The delivery worker: sends queued messages, retries with backoff, records the outcome.

Each message is claimed with `FOR UPDATE SKIP LOCKED` (replicas share the work), sent,
and its outcome committed with the `sent` / `failed` event in the same transaction. A
worker runs `delivery_concurrency` such slots side by side, each one message and one
transaction at a time, so a slow provider answer does not hold up the other messages.

Sending is at-least-once towards the provider. The provider call happens while the row
is locked but before the transaction commits: a crash (or a lost database connection)
after Twilio or the SMTP relay accepted the message and before the commit leaves the row
queued, and the next claim sends it again. Nothing here can make that exactly-once (a
provider accepting a message and our commit are two systems), so the window is kept
small and bounded instead: one message per transaction, the provider call bounded by
its client timeout, and a duplicate can only follow a crash inside that window: a
crash repeats at most one message per slot in flight (`delivery_concurrency` per worker
process). Emails keep a Message-ID derived from our message id, so receiving systems can
drop a repeat; Twilio has no idempotency key, so an SMS repeat reaches the handset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import MessageFailed, MessageSent
from careloop_kit.fields import DecryptionFailed
from careloop_kit.service import Runtime
from careloop_messaging.domain.catalog import TemplateCatalog
from careloop_messaging.domain.channels import OutboundChannel, OutboundMessage
from careloop_messaging.domain.outreach import (
    local_date_and_time,
    message_kind,
    offer_fields,
    retry_delay,
)
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    SenderProfile,
    TemplateNotFound,
    TemplateRefused,
    TemplateRenderError,
)
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import (
    MessageFacts,
    Messages,
    RecipientCipher,
    SecureLinks,
    StoredMessage,
    Templates,
)
from careloop_messaging.usecases.context import DELIVERY_KEY

REPLY_KEYWORDS = "C, R, STOP, HELP"


@dataclass(frozen=True)
class Delivery:
    """What the worker needs besides the database."""

    settings: MessagingSettings
    catalog: TemplateCatalog
    channels: Mapping[Channel, OutboundChannel]
    cipher: RecipientCipher
    links: SecureLinks


def delivery_of(runtime: Runtime) -> Delivery:
    """The delivery helpers `app.py` built at start-up."""
    delivery: Delivery = runtime.state[DELIVERY_KEY]
    return delivery


async def render(
    delivery: Delivery, stored: StoredMessage, address: str, session: AsyncSession
) -> OutboundMessage:
    """The message for its recipient; raises the template errors on a broken template."""
    if stored.channel is None:
        raise TemplateRefused("a queued message has a channel")
    template = await delivery.catalog.resolve(
        Templates(session),
        kind=message_kind(stored.touch),
        channel=stored.channel,
        language=stored.language,
        organization_id=stored.org_id,
        location_id=stored.location_id,
    )
    # Dates follow the template actually used (a Spanish request may fall back to English).
    day, time = local_date_and_time(stored.start_at, stored.time_zone, template.key.language)
    sender = SenderProfile(practice_name=stored.practice_name, sensitive=stored.sensitive_location)
    fields = {
        "appointment_date": day,
        "appointment_time": time,
        "secure_link": delivery.links.url(stored.id),
        "reply_keywords": REPLY_KEYWORDS,
    }
    if template.key.kind is MessageKind.RESCHEDULE_OFFER:
        if not stored.offer_options:
            raise TemplateRefused("a reschedule offer without options")
        fields |= offer_fields(stored.offer_options, stored.time_zone, template.key.language)
    rendered = delivery.catalog.renderer.render(template, fields, sender=sender)
    # The rendered message is for the stored message's channel: the template was.
    return OutboundMessage(message_id=stored.id, to=address, **asdict(rendered))


async def deliver_one(runtime: Runtime, delivery: Delivery) -> bool:
    """Send the next due message, if any; True when one was handled."""
    now = runtime.clock.now()
    async with runtime.sessionmaker() as session, session.begin():
        messages = Messages(session)
        stored = await messages.claim_due(now)
        if stored is None:
            return False
        attempts = stored.attempts + 1
        if stored.offer_expires_at is not None and stored.offer_expires_at <= now:
            # Still queued (retries) when the offer lapsed: sending it now would only
            # invite a reply that scheduling refuses.
            await fail_message(
                runtime, session, stored, attempts - 1, "offer expired before sending"
            )
            return True
        try:
            if stored.recipient_ct is None or stored.channel is None:
                raise TemplateRefused("queued message without a recipient")
            address = await delivery.cipher.open(
                session, stored.org_id, stored.id, stored.recipient_ct
            )
            outbound = await render(delivery, stored, address, session)
        except (TemplateRefused, TemplateRenderError, TemplateNotFound, DecryptionFailed) as exc:
            # A template or key problem does not heal by waiting.
            await fail_message(
                runtime, session, stored, attempts, f"not sendable: {type(exc).__name__}"
            )
            return True
        channel = delivery.channels.get(stored.channel)
        if channel is None:
            await fail_message(runtime, session, stored, attempts, f"no {stored.channel} channel")
            return True
        result = await channel.send(outbound)
        now = runtime.clock.now()
        if result.ok:
            await messages.mark_sent(
                stored.id, provider_id=result.provider_id, attempts=attempts, now=now
            )
            sent = MessageSent(
                **message_ids(stored),
                channel=stored.channel.value,
                attempts=attempts,
                occurred_at=now,
            )
            await _stage(runtime, session, stored, sent)
        elif result.retryable and attempts < delivery.settings.delivery_max_attempts:
            at = now + retry_delay(attempts, base_s=delivery.settings.delivery_backoff_s)
            await messages.schedule_retry(
                stored.id, attempts=attempts, at=at, error=result.error, now=now
            )
        else:
            await fail_message(
                runtime, session, stored, attempts, result.error or "provider refused"
            )
    return True


async def fail_message(
    runtime: Runtime, session: AsyncSession, stored: StoredMessage, attempts: int, error: str
) -> None:
    """Give up on `stored`: marked failed, and `message.failed` staged, in one transaction."""
    now = runtime.clock.now()
    await Messages(session).mark_failed(stored.id, attempts=attempts, error=error, now=now)
    await publish_failed(runtime, session, stored, attempts=attempts, reason=error)


async def publish_failed(
    runtime: Runtime, session: AsyncSession, stored: StoredMessage, *, attempts: int, reason: str
) -> None:
    """Stage `message.failed` for `stored` in the caller's transaction."""
    failed = MessageFailed(
        **message_ids(stored),
        channel=stored.channel.value if stored.channel else None,
        reason=reason[:200],
        attempts=attempts,
        occurred_at=runtime.clock.now(),
    )
    await _stage(runtime, session, stored, failed)


def message_ids(message: MessageFacts) -> dict[str, Any]:
    """What every event about a message says of it: ids only, never its content."""
    return {
        "message_id": message.id,
        "org_id": message.org_id,
        "patient_id": message.patient_id,
        "appointment_id": message.appointment_id,
        "touch_key": message.touch_key,
    }


async def _stage(
    runtime: Runtime,
    session: AsyncSession,
    stored: StoredMessage,
    event: MessageSent | MessageFailed,
) -> None:
    await runtime.outbox.add(session, event, org_id=stored.org_id, location_id=stored.location_id)


async def deliver_due(runtime: Runtime) -> int:
    """Send every message due now, `delivery_concurrency` at a time; returns how many
    were handled."""
    delivery = delivery_of(runtime)
    handled = 0

    async def slot() -> None:
        nonlocal handled
        while await deliver_one(runtime, delivery):
            handled += 1

    # A failing slot cancels the others; the kit restarts the background job.
    async with asyncio.TaskGroup() as group:
        for _ in range(delivery.settings.delivery_concurrency):
            group.create_task(slot())
    return handled
