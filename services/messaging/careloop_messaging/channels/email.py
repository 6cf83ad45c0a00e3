"""Email over SMTP with aiosmtplib: multipart plain + HTML, neutral sender, unsubscribe.

SMTP reply codes decide retries: 4xx is transient (greylisting, full mailbox, rate
limit) and worth another attempt; 5xx is permanent. Connection failures and timeouts
are transient too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

import aiosmtplib
from opentelemetry.metrics import Meter

from careloop_messaging.channels import SentCounter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel

SmtpSecurity = Literal["starttls", "tls", "none"]

_TRANSIENT = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    OSError,
)


@dataclass(frozen=True)
class SmtpConfig:
    """How to reach the SMTP relay. ``security="none"`` is for local test servers only;
    with ``starttls`` the connection fails rather than continue in plaintext."""

    host: str
    port: int
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    validate_certs: bool = True
    cert_bundle: str | None = None


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
        config = self._config
        try:
            await aiosmtplib.send(
                email,
                hostname=config.host,
                port=config.port,
                use_tls=config.security == "tls",
                # True makes aiosmtplib fail when the server offers no STARTTLS, rather
                # than silently sending in plaintext.
                start_tls=config.security == "starttls",
                username=config.username,
                password=config.password,
                timeout=config.timeout_s,
                validate_certs=config.validate_certs,
                cert_bundle=config.cert_bundle,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            return DeliveryResult(
                DeliveryStatus.FAILED,
                retryable=all(400 <= code < 500 for code in codes),
                error=f"SMTP recipient refused ({', '.join(map(str, codes))})",
            )
        except aiosmtplib.SMTPResponseException as exc:
            return DeliveryResult(
                DeliveryStatus.FAILED,
                retryable=400 <= exc.code < 500,
                # The code only: servers often quote the recipient's address in the text.
                error=f"SMTP {exc.code}",
            )
        except _TRANSIENT as exc:
            return DeliveryResult(
                DeliveryStatus.FAILED, retryable=True, error=f"SMTP: {type(exc).__name__}"
            )
        except aiosmtplib.SMTPException as exc:
            # No STARTTLS offered, unsupported extension: configuration, not luck, so a
            # retry would fail the same way.
            return DeliveryResult(DeliveryStatus.FAILED, error=f"SMTP: {exc}")
        return DeliveryResult(DeliveryStatus.SENT, provider_id=email["Message-ID"])
