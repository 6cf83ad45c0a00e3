"""Settings of the referrals service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_contracts.platform import REFERRALS_FIELDS_KEY
from careloop_kit.settings import KitSettings


class ReferralsSettings(KitSettings):
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
