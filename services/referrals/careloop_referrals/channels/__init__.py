"""Adapters of the outcome-report port (`domain.outcome.ReportChannel`): one per way a
referring provider is reached. `report_channels` builds the set the settings ask for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hvac.exceptions import InvalidPath

from careloop_kit.clock import Clock
from careloop_kit.smtp import SmtpConfig
from careloop_kit.vault import Vault, VaultUnavailable
from careloop_referrals.channels.direct import DirectChannel
from careloop_referrals.channels.fax import PhaxioFaxChannel
from careloop_referrals.channels.log import LogReportChannel
from careloop_referrals.channels.secure_email import SecureEmailChannel
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import ReportChannel
from careloop_referrals.settings import ReferralsSettings


def vault_secret(vault: Vault, path: str) -> Callable[[], Awaitable[Mapping[str, Any]]]:
    """Reads the KV secret at `path` when called; a secret that is not there reads as
    empty (the channel then names the fields to write), Vault down raises."""

    async def read() -> Mapping[str, Any]:
        try:
            return await vault.read_secret(path)
        except VaultUnavailable as exc:
            if isinstance(exc.__cause__, InvalidPath):
                return {}
            raise

    return read


def report_channels(
    settings: ReferralsSettings, vault: Vault, clock: Clock
) -> dict[Channel, ReportChannel]:
    """The channels this replica delivers through. `log` mode (the local stack) records
    every report as sent and contacts nobody."""
    if settings.report_delivery_mode == "log":
        return {channel: LogReportChannel(channel) for channel in Channel}
    return {
        Channel.SECURE_EMAIL: SecureEmailChannel(
            settings.smtp_config(),
            from_address=settings.report_from_address,
            message_id_domain=settings.report_message_id_domain,
        ),
        Channel.DIRECT: DirectChannel(
            SmtpConfig(
                host=settings.direct_relay_host,
                port=settings.direct_relay_port,
                security=settings.direct_relay_security,
            ),
            vault_secret(vault, settings.direct_sender_secret_path),
            secret_path=settings.direct_sender_secret_path,
            from_address=settings.direct_from_address,
            message_id_domain=settings.report_message_id_domain,
            clock=clock,
        ),
        Channel.FAX: PhaxioFaxChannel(
            vault_secret(vault, settings.fax_credentials_secret_path),
            secret_path=settings.fax_credentials_secret_path,
            base_url=settings.fax_api_base_url,
            header_text=settings.practice_display_name,
            timeout_s=settings.fax_timeout_s,
        ),
    }
