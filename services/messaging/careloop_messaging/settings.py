"""Settings of messaging (environment prefix `CARELOOP_`).

Production refuses plaintext SMTP, a non-https Twilio API, placeholder credentials and
the `log` delivery mode (which contacts nobody and would silently drop every reminder).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER
from careloop_kit.smtp import SmtpSettings
from careloop_messaging.channels.email import EmailIdentity
from careloop_messaging.channels.sms import TWILIO_API_BASE
from careloop_messaging.domain.templates import DEFAULT_NEUTRAL_SENDER_NAME


class MessagingSettings(SmtpSettings):
    http_port: int = Field(8105, description="Port of the messaging API.")
    delivery_mode: Literal["provider", "log"] = Field(
        "log",
        description=(
            "`provider` sends through Twilio and SMTP; `log` marks messages sent and logs "
            "their ids without contacting anyone (the local stack has no SMS provider or "
            "mail relay). Refused in production."
        ),
    )
    patients_url: str = Field(
        "http://127.0.0.1:8101", description="Base URL of the patients API (contact data)."
    )
    identity_token_url: str = Field(
        "http://127.0.0.1:8103/oauth/token",
        description="Identity's token endpoint, for messaging's own service token.",
    )
    patients_timeout_s: float = Field(
        5.0, description="Seconds a contact-data read from patients may take."
    )
    patients_concurrency: int = Field(
        8,
        ge=1,
        description=(
            "Contact-data reads from patients in flight at once while a consumer batch is "
            "prepared (one read per patient of the batch)."
        ),
    )
    recipient_key_secret_path: str = Field(
        "careloop/messaging/recipient-key",
        description=(
            "KV v2 path of the key (field `key`, base64, 32+ bytes) that derives the blind "
            "index of stored addresses (opt-outs, inbound replies) and opens addresses and "
            "inbox items sealed before the field port, until `careloop keys rewrap "
            "messaging` has moved them onto data keys of the transit key "
            "`careloop-messaging-fields`; created by the Vault bootstrap. The service "
            "refuses to start without it."
        ),
    )
    link_key_secret_path: str = Field(
        "careloop/messaging/link-key",
        description=(
            "KV v2 path of the key (field `key`, base64, 32+ bytes) that signs secure links "
            "(`<base>/<message id + HMAC>`); created by the Vault bootstrap. Replacing it "
            "voids every link already sent. The service refuses to start without it."
        ),
    )
    # Evidence (domain/evidence.md): two reminders (3 days and 1 day before) beat one in
    # a randomized trial of 54,066 patients, so a visit's default sequence is three
    # touches with the booking confirmation; patients complain of floods (one counted 12
    # contacts for one visit). Three a week lets one visit's full sequence through and
    # stops a second program from piling on top of it.
    contact_budget_per_week: int = Field(
        3,
        ge=0,
        description=(
            "Automated messages one patient may receive in any 7 days, across every "
            "program. 3 = the default reminder sequence of one visit (confirmation, 3 days "
            "and 1 day before)."
        ),
    )
    secure_link_base: str = Field(
        "http://127.0.0.1:8100/api/v1/messaging/links",
        description="Public base of the secure one-time link put in messages "
        "(`<base>/<token>`): the gateway's route to messaging's `/links`.",
    )
    default_country_code: str = Field(
        "1", description="Calling code for phone numbers stored without one (E.164)."
    )
    delivery_max_attempts: int = Field(
        5, ge=1, description="Send attempts of one message before it is marked failed."
    )
    delivery_backoff_s: float = Field(
        30.0, gt=0, description="Delay before the first retry; doubles on each retry."
    )
    delivery_poll_interval_s: float = Field(
        1.0, gt=0, description="Sleep of the delivery worker when nothing is due, in seconds."
    )
    delivery_concurrency: int = Field(
        8,
        ge=1,
        description=(
            "Messages the delivery worker sends at once, each claimed and committed in its "
            "own transaction; also the most messages a crash can send twice."
        ),
    )
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
    twilio_inbound_url: str | None = Field(
        None, description="Public URL Twilio posts incoming SMS to (STOP / START)."
    )
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
        if self.delivery_mode == "log":
            problems.append("delivery_mode=log would drop every message in production")
        for name in ("secure_link_base", "patients_url", "identity_token_url"):
            if not getattr(self, name).startswith("https://"):
                problems.append(f"{name} must use https:// in production")
        if LOCAL_DEVELOPMENT_PLACEHOLDER in self.twilio_auth_token.get_secret_value():
            problems.append("twilio_auth_token still holds the local-development placeholder")
        if not self.twilio_api_base.startswith("https://"):
            problems.append("twilio_api_base must use https:// in production")
        problems.extend(self.smtp_problems())
        if (self.twilio_messaging_service_sid is None) == (self.twilio_from_number is None):
            problems.append("set exactly one of twilio_messaging_service_sid, twilio_from_number")
        if problems:
            raise ValueError("production messaging settings refused: " + "; ".join(problems))
        return self

    def email_identity(self) -> EmailIdentity:
        return EmailIdentity(
            from_address=self.email_from_address,
            message_id_domain=self.email_message_id_domain,
            unsubscribe_mailto=self.email_unsubscribe_mailto,
        )
