"""The development stand-in for every channel (`delivery_mode=log`)."""

from __future__ import annotations

import logging

from opentelemetry.metrics import Meter

from careloop_messaging.channels import SentCounter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel

log = logging.getLogger(__name__)


class LogChannel:
    """Logs the message id and contacts nobody; counted like a real channel, so the
    local stack's `/metrics` shows what it would have sent.

    The log line holds no address and no body: the local stack's logs are no place for
    either, even with synthetic data.
    """

    def __init__(self, channel: Channel, meter: Meter | None = None) -> None:
        self.channel = channel
        self._sent = SentCounter(channel, meter)

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        log.info(
            "delivery_mode=log: %s message %s recorded as sent; nothing was delivered",
            self.channel,
            message.message_id,
        )
        return self._sent.count(
            DeliveryResult(DeliveryStatus.SENT, provider_id=f"log-{message.message_id}")
        )
