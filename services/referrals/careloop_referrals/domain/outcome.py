"""The outcome report: what the specialist says after the visit, sent back to the
referring provider through the channel the directory names for them. Sending it closes
the loop (`seen` → `outcome reported`).

Only an inbound referral's outcome is written here (our specialist saw the patient);
an outbound referral's report comes from the outside specialist and is recorded as a
step. The report's subject names no patient and no condition: mail subjects travel and
are shown in clear even when the body is protected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cryptography import x509

from careloop_referrals.domain.directory import (
    CHANNEL_ADDRESS,
    Channel,
    DirectoryEntry,
    missing_for,
)
from careloop_referrals.domain.referral import Direction, Referral, Stage


class ReportStatus(StrEnum):
    PENDING = "pending"  # written, on its way (retried on a transient failure)
    SENT = "sent"  # the channel accepted it; the referral is closed
    FAILED = "failed"  # refused for good (a wrong address): fix the directory, resend


class OutcomeRefused(Exception):
    """The outcome cannot be written on this referral as it stands."""


@dataclass(frozen=True)
class OutcomeReport:
    referral_id: str
    org_id: str
    author: str
    written_at: datetime
    channel: Channel
    status: ReportStatus = ReportStatus.PENDING
    attempts: int = 0
    sent_at: datetime | None = None
    provider_id: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class RenderedReport:
    """What a channel delivers: `key` is stable per report, so a retried delivery can
    be recognised as the same one by the receiving system."""

    key: str
    subject: str
    body: str


@dataclass(frozen=True)
class Recipient:
    """Where a channel delivers: the address its channel names (an email or Direct
    address, a fax number) and, for Direct, the PEM certificate to encrypt to."""

    address: str
    certificate: str | None = None


@dataclass(frozen=True)
class Delivery:
    accepted: bool
    retryable: bool = False
    error: str | None = None
    provider_id: str | None = None


class ReportChannel(Protocol):
    """A way to reach a referring provider (secure email, Direct, fax)."""

    channel: Channel

    async def send(self, report: RenderedReport, recipient: Recipient) -> Delivery: ...


def recipient_of(entry: DirectoryEntry, channel: Channel) -> Recipient | None:
    """The entry's recipient on `channel`; None when it lacks the address."""
    address = getattr(entry.contact, CHANNEL_ADDRESS[channel])
    if not address:
        return None
    certificate = entry.contact.direct_certificate if channel is Channel.DIRECT else None
    return Recipient(address, certificate)


def certificate_expired(pem: str, now: datetime) -> datetime | None:
    """When the certificate expired, if it has by `now`."""
    ends = x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
    return ends if ends <= now else None


def write(
    referral: Referral,
    current: OutcomeReport | None,
    referrer: DirectoryEntry,
    *,
    author: str,
    now: datetime,
) -> OutcomeReport:
    """A new report to send, or `OutcomeRefused` saying what to do instead."""
    if referral.direction is not Direction.INBOUND:
        raise OutcomeRefused(
            "An outbound referral's outcome comes from the outside specialist: record "
            "it with the step to outcome-reported."
        )
    if referral.stage is not Stage.SEEN:
        raise OutcomeRefused(
            f"The referral is {referral.stage}: the outcome is written once the patient was seen."
        )
    if current is not None and current.status is not ReportStatus.FAILED:
        raise OutcomeRefused(
            f"The outcome report is already {current.status}; a failed one may be resent."
        )
    missing = missing_for(referrer.contact, referrer.preferred_channel)
    if missing:
        fields = " and ".join(f"`{name}`" for name in missing)
        raise OutcomeRefused(
            f"{referrer.name} has no {fields} for their preferred channel "
            f"{referrer.preferred_channel}: add it to the directory entry."
        )
    certificate = referrer.contact.direct_certificate
    if referrer.preferred_channel is Channel.DIRECT and certificate:
        expired = certificate_expired(certificate, now)
        if expired is not None:
            raise OutcomeRefused(
                f"The Direct certificate of {referrer.name} expired on "
                f"{expired.date().isoformat()}: put their current one on the directory entry."
            )
    return OutcomeReport(
        referral_id=referral.id,
        org_id=referral.org_id,
        author=author,
        written_at=now,
        channel=referrer.preferred_channel,
    )


def render(
    report: OutcomeReport, referral: Referral, note: str, *, practice: str, seen_at: datetime
) -> RenderedReport:
    """The report as the referring provider reads it."""
    reference = referral.id
    body = "\n".join(
        [
            f"Outcome of your referral {reference} to {practice}.",
            f"The patient was seen on {seen_at.date().isoformat()}.",
            "",
            note,
            "",
            f"Reported by {report.author} on {report.written_at.date().isoformat()}.",
        ]
    )
    return RenderedReport(
        key=f"outcome-{reference}-{report.written_at.strftime('%Y%m%d%H%M%S')}",
        subject=f"Referral outcome report {reference}",
        body=body,
    )


def delivered(report: OutcomeReport, delivery: Delivery, *, now: datetime) -> OutcomeReport:
    """The report after one delivery attempt."""
    attempts = report.attempts + 1
    if delivery.accepted:
        return replace(
            report,
            status=ReportStatus.SENT,
            attempts=attempts,
            sent_at=now,
            provider_id=delivery.provider_id,
            last_error=None,
        )
    status = ReportStatus.PENDING if delivery.retryable else ReportStatus.FAILED
    return replace(report, status=status, attempts=attempts, last_error=delivery.error)
