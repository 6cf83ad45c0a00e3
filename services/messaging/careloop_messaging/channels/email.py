"""Email to patients: multipart plain + HTML, neutral sender, unsubscribe, sent through
the kit's SMTP sender (which decides what is worth a retry)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from opentelemetry.metrics import Meter

from careloop_kit.smtp import SmtpConfig, send_email
from careloop_messaging.channels import SentCounter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel


@dataclass(frozen=True)
class EmailIdentity:
    """Our side of the envelope. The display name comes from each message (neutral for
    sensitive locations); the address and the Message-ID domain are ours."""

    from_address: str
    message_id_domain: str
    unsubscribe_mailto: str | None = None


def build_email(
    message: OutboundMessage, identity: EmailIdentity, *, now: datetime | None = None
) -> EmailMessage:
    """The MIME message for ``message``: text/plain, plus text/html when there is one."""
    if message.channel is not Channel.EMAIL:
        raise ValueError(f"cannot build an email from a {message.channel} message")
    if not message.subject:
        raise ValueError("an email needs a subject")
    email = EmailMessage()
    username, _, domain = identity.from_address.partition("@")
    email["From"] = Address(display_name=message.sender_name, username=username, domain=domain)
    email["To"] = message.to
    email["Subject"] = message.subject
    email["Date"] = format_datetime(now or datetime.now(UTC))
    # Derived from our id, not random: a retried send carries the same Message-ID, so
    # receiving systems can drop the duplicate.
    email["Message-ID"] = message_id_header(message.message_id, identity.message_id_domain)
    uris = (identity.unsubscribe_mailto, message.unsubscribe_url)
    unsubscribe = [f"<{uri}>" for uri in uris if uri]
    if unsubscribe:
        email["List-Unsubscribe"] = ", ".join(unsubscribe)
        if message.unsubscribe_url and message.unsubscribe_url.startswith("https://"):
            # RFC 8058 one-click: mailbox providers (Gmail, Yahoo) require it for bulk senders.
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(message.body)
    if message.html_body:
        email.add_alternative(message.html_body, subtype="html")
    return email


def message_id_header(message_id: str, domain: str) -> str:
    return f"<{message_id}@{domain}>"


class SmtpEmailChannel:
    """:class:`~careloop_messaging.domain.channels.OutboundChannel` for email over SMTP."""

    channel = Channel.EMAIL

    def __init__(
        self, config: SmtpConfig, identity: EmailIdentity, *, meter: Meter | None = None
    ) -> None:
        self._config = config
        self._identity = identity
        self._sent = SentCounter(Channel.EMAIL, meter)

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        email = build_email(message, self._identity)
        return self._sent.count(await self._send(email))

    async def _send(self, email: EmailMessage) -> DeliveryResult:
        result = await send_email(email, self._config)
        if result.accepted:
            return DeliveryResult(DeliveryStatus.SENT, provider_id=result.message_id)
        return DeliveryResult(DeliveryStatus.FAILED, retryable=result.retryable, error=result.error)
