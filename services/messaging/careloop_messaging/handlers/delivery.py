"""The delivery worker: a background job that sends due messages until shutdown (the
sending itself, one message and one transaction at a time, is `usecases.delivery`), and
the log stand-in for every channel in `delivery_mode=log`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from careloop_kit.service import Runtime
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel
from careloop_messaging.usecases.context import settings_of
from careloop_messaging.usecases.delivery import deliver_due

log = logging.getLogger(__name__)


class LogChannel:
    """Development stand-in for every channel: logs the message id, contacts nobody.

    The log line holds no address and no body: the local stack's logs are no place for
    either, even with synthetic data.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        log.info(
            "delivery_mode=log: %s message %s recorded as sent; nothing was delivered",
            self.channel,
            message.message_id,
        )
        return DeliveryResult(DeliveryStatus.SENT, provider_id=f"log-{message.message_id}")


async def delivery_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: deliver due messages until shutdown."""
    settings = settings_of(runtime)
    while not stop.is_set():
        await deliver_due(runtime)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.delivery_poll_interval_s)
