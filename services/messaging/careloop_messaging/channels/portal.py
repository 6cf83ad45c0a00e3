"""The portal inbox as an outbound channel.

Its storage comes later, with the service app and its database: for now ``send`` only
assigns an inbox item id and keeps the message in memory, so the channel port has all
three implementations and callers can be written against it.
"""

from __future__ import annotations

import uuid

from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel


class PortalInboxChannel:
    """:class:`~careloop_messaging.domain.channels.OutboundChannel` for the portal inbox
    (in memory until the inbox table exists)."""

    channel = Channel.PORTAL

    def __init__(self) -> None:
        self.items: dict[str, OutboundMessage] = {}

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        if message.channel is not Channel.PORTAL:
            raise ValueError(f"PortalInboxChannel cannot send a {message.channel} message")
        item_id = f"inbox-{uuid.uuid4().hex}"
        self.items[item_id] = message
        return DeliveryResult(DeliveryStatus.SENT, provider_id=item_id)
