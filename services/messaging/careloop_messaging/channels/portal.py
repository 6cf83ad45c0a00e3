"""The portal inbox as an outbound channel: "sending" stores the rendered message in the
patient's inbox (`inbox_item`), where they read it after signing in.

The inbox write commits in a transaction of its own, like a provider accepting a message:
the delivery worker's transaction (which holds the message row locked) then records the
outcome. A crash between the two leaves the message queued and the next attempt finds
the item already stored (one item per message id), so a retried delivery never shows the
patient the same message twice.
"""

from __future__ import annotations

from opentelemetry.metrics import Meter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_kit.clock import Clock
from careloop_messaging.channels import SentCounter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel
from careloop_messaging.store.repository import Inbox, InboxCipher


class PortalInboxChannel:
    """:class:`~careloop_messaging.domain.channels.OutboundChannel` for the portal inbox."""

    channel = Channel.PORTAL

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        cipher: InboxCipher,
        clock: Clock,
        *,
        meter: Meter | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cipher = cipher
        self._clock = clock
        self._sent = SentCounter(Channel.PORTAL, meter)

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        if message.channel is not Channel.PORTAL:
            raise ValueError(f"PortalInboxChannel cannot send a {message.channel} message")
        return self._sent.count(await self._store(message))

    async def _store(self, message: OutboundMessage) -> DeliveryResult:
        async with self._sessionmaker() as session, session.begin():
            item_id = await Inbox(session, self._cipher).deliver(
                message_id=message.message_id,
                sender_name=message.sender_name,
                subject=message.subject,
                body=message.body,
                now=self._clock.now(),
            )
        if item_id is None:
            return DeliveryResult(
                DeliveryStatus.FAILED, retryable=False, error="no such message for the inbox"
            )
        return DeliveryResult(DeliveryStatus.SENT, provider_id=item_id)
