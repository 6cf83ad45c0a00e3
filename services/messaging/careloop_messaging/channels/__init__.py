"""Adapters that deliver rendered messages: Twilio SMS, SMTP email, the portal inbox.

Every adapter counts its attempts on `careloop.messages.sent` (Prometheus:
`careloop_messages_sent_total{channel, outcome}`), on the meter of the service that
built it.
"""

from __future__ import annotations

from opentelemetry.metrics import Meter

from careloop_kit.metrics import MESSAGES_SENT, service_meter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus
from careloop_messaging.domain.templates import Channel


def outcome(result: DeliveryResult) -> str:
    """`sent` or `queued` when the next hop took the message; `retry` when it may take
    it later; `failed` when it never will."""
    if result.status is not DeliveryStatus.FAILED:
        return result.status.value
    return "retry" if result.retryable else "failed"


class SentCounter:
    """Counts delivery attempts of one channel by outcome (never an address or a body)."""

    def __init__(self, channel: Channel, meter: Meter | None = None) -> None:
        # Adapters are built in the service's start-up, where its meter is current.
        self._channel = channel.value
        self._counter = (meter or service_meter()).create_counter(
            MESSAGES_SENT,
            unit="{message}",
            description="Delivery attempts by channel and outcome.",
        )

    def count(self, result: DeliveryResult) -> DeliveryResult:
        """Count `result` and hand it back."""
        self._counter.add(1, {"channel": self._channel, "outcome": outcome(result)})
        return result
