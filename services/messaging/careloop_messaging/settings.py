"""Settings of messaging (environment prefix `CARELOOP_`).

Only the delivery settings exist so far; the service app will add its own. Production
refuses plaintext SMTP, a non-https Twilio API and placeholder credentials.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER, KitSettings
from careloop_messaging.channels.email import EmailIdentity, SmtpConfig, SmtpSecurity
from careloop_messaging.channels.sms import TWILIO_API_BASE
from careloop_messaging.domain.templates import DEFAULT_NEUTRAL_SENDER_NAME


class MessagingSettings(KitSettings):
    http_port: int = Field(8105, description="Port of the messaging API.")
    neutral_sender_name: str = Field(
        DEFAULT_NEUTRAL_SENDER_NAME,
        description="Sender and practice name shown for sensitive (behavioral health) locations.",
    )
    twilio_api_base: str = Field(
        TWILIO_API_BASE, description="Twilio REST API base URL (the local double in tests)."
    )
    twilio_account_sid: str = Field("", description="Twilio Account SID (AC...).")
    twilio_auth_token: SecretStr = Field(
        SecretStr(LOCAL_DEVELOPMENT_PLACEHOLDER),
        description="Twilio Auth Token: API password and webhook signing key.",
    )
    twilio_messaging_service_sid: str | None = Field(
        None, description="Messaging Service SID (MG...); used instead of a From number."
    )
    twilio_from_number: str | None = Field(
        None, description="E.164 sender number when no Messaging Service is set."
    )
    twilio_status_callback_url: str | None = Field(
        None, description="Public URL Twilio posts delivery status callbacks to."
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(587, description="SMTP relay port (587 STARTTLS, 465 TLS).")
    smtp_security: SmtpSecurity = Field(
        "starttls", description="`starttls`, `tls`, or `none` (local test servers only)."
    )
    smtp_username: str | None = Field(None, description="SMTP user, when the relay wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    email_from_address: str = Field(
        "notifications@careloop.localhost", description="Envelope and From address."
    )
    email_message_id_domain: str = Field(
        "careloop.localhost", description="Right-hand side of the Message-IDs we generate."
    )
    email_unsubscribe_mailto: str | None = Field(
        None, description="`mailto:` URI offered in List-Unsubscribe."
    )

    @model_validator(mode="after")
    def _delivery_is_locked_down(self) -> MessagingSettings:
        if self.environment != "production":
            return self
        problems: list[str] = []
        if LOCAL_DEVELOPMENT_PLACEHOLDER in self.twilio_auth_token.get_secret_value():
            problems.append("twilio_auth_token still holds the local-development placeholder")
        if not self.twilio_api_base.startswith("https://"):
            problems.append("twilio_api_base must use https:// in production")
        if self.smtp_security == "none":
            problems.append("smtp_security must be starttls or tls in production")
        if (self.twilio_messaging_service_sid is None) == (self.twilio_from_number is None):
            problems.append("set exactly one of twilio_messaging_service_sid, twilio_from_number")
        if problems:
            raise ValueError("production messaging settings refused: " + "; ".join(problems))
        return self

    def smtp_config(self) -> SmtpConfig:
        return SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password.get_secret_value() if self.smtp_password else None,
        )

    def email_identity(self) -> EmailIdentity:
        return EmailIdentity(
            from_address=self.email_from_address,
            message_id_domain=self.email_message_id_domain,
            unsubscribe_mailto=self.email_unsubscribe_mailto,
        )
