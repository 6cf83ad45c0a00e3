"""The outbound channel port: one ``send`` for SMS, email and the portal inbox."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from careloop_messaging.domain.templates import Channel


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    """Accepted by the provider, not yet handed on (Twilio's first status)."""
    SENT = "sent"
    """Handed to the next hop (the SMTP server accepted it; the inbox stored it)."""
    FAILED = "failed"


@dataclass(frozen=True)
class OutboundMessage:
    """A rendered message ready for one recipient.

    ``message_id`` is ours (unique per delivery attempt chain, no PHI): it becomes the
    email Message-ID and lets a retry be recognised.
    """

    message_id: str
    channel: Channel
    to: str
    body: str
    sender_name: str
    subject: str | None = None
    html_body: str | None = None
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    status: DeliveryStatus
    provider_id: str | None = None
    retryable: bool = False
    error: str | None = None
    """Provider error code and text; never the message content."""

    @property
    def ok(self) -> bool:
        return self.status is not DeliveryStatus.FAILED


class OutboundChannel(Protocol):
    """Delivers to one channel. Never raises for a provider refusal: the result says
    whether the attempt may be retried; programming errors still raise."""

    channel: Channel

    async def send(self, message: OutboundMessage) -> DeliveryResult: ...
