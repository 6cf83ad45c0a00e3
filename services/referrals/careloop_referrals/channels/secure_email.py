"""Outcome reports by secure email: SMTP to the practice's relay with TLS required on
the connection (STARTTLS or implicit TLS; production refuses `smtp_security=none`),
through the kit's sender, which decides what is worth a retry."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from careloop_kit.smtp import SmtpConfig, send_email
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import Delivery, Recipient, RenderedReport


class SecureEmailChannel:
    channel = Channel.SECURE_EMAIL

    def __init__(self, config: SmtpConfig, *, from_address: str, message_id_domain: str) -> None:
        self._config = config
        self._from = from_address
        self._domain = message_id_domain

    def build(self, report: RenderedReport, address: str) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self._from
        email["To"] = address
        email["Subject"] = report.subject
        email["Date"] = format_datetime(datetime.now(UTC))
        # From the report's key: a retried send carries the same Message-ID.
        email["Message-ID"] = f"<{report.key}@{self._domain}>"
        email.set_content(report.body)
        return email

    async def send(self, report: RenderedReport, recipient: Recipient) -> Delivery:
        result = await send_email(self.build(report, recipient.address), self._config)
        return Delivery(
            result.accepted,
            retryable=result.retryable,
            error=result.error,
            provider_id=result.message_id,
        )
