"""The local stack's channel: a report is recorded as sent and nobody is contacted."""

from __future__ import annotations

import logging

from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import Delivery, Recipient, RenderedReport

log = logging.getLogger(__name__)


class LogReportChannel:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def send(self, report: RenderedReport, recipient: Recipient) -> Delivery:
        # The key only: the recipient and the body are no business of a log line.
        log.info(
            "report_delivery_mode=log: %s report %s recorded as sent; nothing was delivered",
            self.channel,
            report.key,
        )
        return Delivery(True, provider_id=f"log-{report.key}")
