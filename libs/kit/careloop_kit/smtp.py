"""Email out over SMTP (aiosmtplib), the same way from every service that sends mail:
messaging's patient emails, referrals' outcome reports to referring providers.

SMTP reply codes decide retries: 4xx is transient (greylisting, full mailbox, rate
limit) and worth another attempt; 5xx is permanent. Connection failures and timeouts
are transient too. Errors name the reply code only: servers often quote the recipient's
address in the text, and an address is PHI when the recipient is a patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from pydantic import Field, SecretStr

from careloop_kit.settings import KitSettings

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
class SmtpResult:
    """What the relay said: accepted (with the message's Message-ID), or refused and
    whether another attempt may succeed."""

    accepted: bool
    retryable: bool = False
    error: str | None = None
    message_id: str | None = None


async def send_email(email: EmailMessage, config: SmtpConfig) -> SmtpResult:
    """Hand `email` to the relay; never raises for what the relay or the network did."""
    try:
        await aiosmtplib.send(
            email,
            hostname=config.host,
            port=config.port,
            use_tls=config.security == "tls",
            # True makes aiosmtplib fail when the server offers no STARTTLS, rather than
            # silently sending in plaintext.
            start_tls=config.security == "starttls",
            username=config.username,
            password=config.password,
            timeout=config.timeout_s,
            validate_certs=config.validate_certs,
            cert_bundle=config.cert_bundle,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [refused.code for refused in exc.recipients]
        return SmtpResult(
            False,
            retryable=all(400 <= code < 500 for code in codes),
            error=f"SMTP recipient refused ({', '.join(map(str, codes))})",
        )
    except aiosmtplib.SMTPResponseException as exc:
        return SmtpResult(False, retryable=400 <= exc.code < 500, error=f"SMTP {exc.code}")
    except _TRANSIENT as exc:
        return SmtpResult(False, retryable=True, error=f"SMTP: {type(exc).__name__}")
    except aiosmtplib.SMTPException as exc:
        # No STARTTLS offered, unsupported extension: configuration, not luck, so a retry
        # would fail the same way.
        return SmtpResult(False, error=f"SMTP: {exc}")
    return SmtpResult(True, message_id=email["Message-ID"])


class SmtpSettings(KitSettings):
    """The relay settings of a service that sends email (environment prefix
    `CARELOOP_`); production refuses `smtp_security=none`."""

    smtp_host: str = Field("127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(587, description="SMTP relay port (587 STARTTLS, 465 TLS).")
    smtp_security: SmtpSecurity = Field(
        "starttls", description="`starttls`, `tls`, or `none` (local test servers only)."
    )
    smtp_username: str | None = Field(None, description="SMTP user, when the relay wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")

    def smtp_config(self) -> SmtpConfig:
        return SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password.get_secret_value() if self.smtp_password else None,
        )

    def smtp_problems(self) -> list[str]:
        """What production refuses in these settings (the service's validator raises)."""
        if self.environment == "production" and self.smtp_security == "none":
            return ["smtp_security must be starttls or tls in production"]
        return []
