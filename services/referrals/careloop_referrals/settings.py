"""Settings of the referrals service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from careloop_contracts.platform import REFERRALS_FIELDS_KEY
from careloop_kit.smtp import SmtpSecurity, SmtpSettings


class ReferralsSettings(SmtpSettings):
    http_port: int = Field(8106, description="Port of the referrals API.")
    fields_transit_key: str = Field(
        REFERRALS_FIELDS_KEY,
        description=(
            "Vault transit key that wraps the data keys of referral reasons and "
            "authorization numbers."
        ),
    )
    clock_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description=(
            "Seconds between two scans for stage clocks that ran out (a stall is reported "
            "at most this late; every replica scans, they share the work)."
        ),
    )
    authorization_reminder_days: int = Field(
        14,
        ge=0,
        description=(
            "Days before an approved authorization expires that the coordinator is told "
            "(`careloop.referrals.authorization.expiring.v1`): time to ask the payer for "
            "an extension before the visit falls outside it."
        ),
    )
    report_delivery_mode: Literal["provider", "log"] = Field(
        "log",
        description=(
            "`provider` sends outcome reports to referring providers by their preferred "
            "channel: secure email through the SMTP relay, Direct through the HISP relay, "
            "fax through the fax provider's API; `log` records them as sent and contacts "
            "nobody (the local stack has no relay). Refused in production."
        ),
    )
    report_from_address: str = Field(
        "referrals@careloop.localhost", description="From address of outcome reports."
    )
    report_message_id_domain: str = Field(
        "careloop.localhost", description="Right-hand side of outcome reports' Message-IDs."
    )
    direct_relay_host: str = Field(
        "127.0.0.1",
        description=(
            "SMTP host of the HISP (the Direct provider) that relays Direct outcome reports "
            "to the referring provider's HISP."
        ),
    )
    direct_relay_port: int = Field(
        587, description="Port of the HISP relay (587 STARTTLS, 465 TLS)."
    )
    direct_relay_security: SmtpSecurity = Field(
        "starttls",
        description="`starttls`, `tls`, or `none` (local test servers only).",
    )
    direct_from_address: str = Field(
        "referrals@direct.careloop.localhost",
        description=(
            "The practice's Direct address: From of Direct reports, and the address the "
            "sender certificate is issued to."
        ),
    )
    direct_sender_secret_path: str = Field(
        "careloop/referrals/direct",
        description=(
            "KV v2 path of the Direct sender's credentials: `key` (PEM private key) and "
            "`certificate` (PEM, the sender certificate issued for `direct_from_address`), "
            "optionally `relay_username` and `relay_password` for the HISP relay. Read at "
            "each Direct delivery, so a renewed certificate is used without a restart."
        ),
    )
    fax_api_base_url: str = Field(
        "https://api.phaxio.com/v2.1",
        description=(
            "Base URL of the fax provider's API (Phaxio v2.1: outcome reports are sent "
            "with `POST {base}/faxes`). https only in production."
        ),
    )
    fax_credentials_secret_path: str = Field(
        "careloop/referrals/fax",
        description=(
            "KV v2 path of the fax API credentials: `api_key` and `api_secret` (HTTP Basic "
            "auth). Read at each fax delivery."
        ),
    )
    fax_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a fax upload to the provider may take before it is retried.",
    )
    report_max_attempts: int = Field(
        8,
        ge=1,
        description=(
            "Delivery attempts of an outcome report refused for a transient reason "
            "(greylisting, a relay down) before it is failed for a person to resend."
        ),
    )
    report_retry_base_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Seconds before the second delivery attempt of an outcome report; each "
            "later one waits twice as long (8 attempts span about 2 hours)."
        ),
    )
    practice_display_name: str = Field(
        "the practice",
        description="How outcome reports name the practice the patient was referred to.",
    )
    max_document_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest document of a referral packet, in bytes. Through the gateway the "
            "whole request (base64, about 4/3 of the documents) must also fit its limit "
            "for referrals (`CARELOOP_MAX_BODY_BYTES_BY_SERVICE`, 16 MiB)."
        ),
    )
    max_page_size: int = Field(
        200, ge=1, le=1000, description="Referrals or directory entries one page lists at most."
    )
    max_figures_days: int = Field(
        731,
        ge=1,
        description=(
            "Longest period, in days, the loop-closure figures cover in one request (two "
            "years: a year against the year before)."
        ),
    )

    @model_validator(mode="after")
    def _reports_are_delivered_in_production(self) -> ReferralsSettings:
        problems = self.smtp_problems()
        if self.environment == "production":
            if self.report_delivery_mode == "log":
                problems.append("report_delivery_mode=log would drop every outcome report")
            if self.direct_relay_security == "none":
                problems.append("direct_relay_security must be starttls or tls in production")
            if not self.fax_api_base_url.startswith("https://"):
                problems.append("fax_api_base_url must use https:// in production")
        if problems:
            raise ValueError("production referrals settings refused: " + "; ".join(problems))
        return self
