"""Adapters of the outcome-report port (`domain.outcome.ReportChannel`): one per way a
referring provider is reached. `report_channels` builds the set the settings ask for."""

from __future__ import annotations

from careloop_referrals.channels.log import LogReportChannel
from careloop_referrals.channels.secure_email import SecureEmailChannel
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import ReportChannel
from careloop_referrals.settings import ReferralsSettings


def report_channels(settings: ReferralsSettings) -> dict[Channel, ReportChannel]:
    """The channels this replica delivers through. `log` mode (the local stack) records
    every report as sent and contacts nobody; Direct and fax have no adapter yet, so a
    provider who prefers them is refused when the outcome is written."""
    if settings.report_delivery_mode == "log":
        return {channel: LogReportChannel(channel) for channel in Channel}
    return {
        Channel.SECURE_EMAIL: SecureEmailChannel(
            settings.smtp_config(),
            from_address=settings.report_from_address,
            message_id_domain=settings.report_message_id_domain,
        )
    }
