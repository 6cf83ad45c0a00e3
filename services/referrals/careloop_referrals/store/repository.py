"""The one way to reach the referrals tables: `repositories(session)`, one repository
per aggregate, all on the caller's session (and so in its transaction)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_referrals.store.authorizations import AuthorizationRepository
from careloop_referrals.store.clock_settings import ClockSettingRepository
from careloop_referrals.store.directory import DirectoryRepository
from careloop_referrals.store.documents import DocumentRepository
from careloop_referrals.store.locations import LocationViewRepository
from careloop_referrals.store.outcomes import OutcomeRepository
from careloop_referrals.store.referrals import ReferralRepository


@dataclass(frozen=True)
class Repositories:
    referrals: ReferralRepository
    directory: DirectoryRepository
    authorizations: AuthorizationRepository
    outcomes: OutcomeRepository
    clock_settings: ClockSettingRepository
    documents: DocumentRepository
    locations: LocationViewRepository


def repositories(session: AsyncSession) -> Repositories:
    """Every repository on the caller's session."""
    return Repositories(
        referrals=ReferralRepository(session),
        directory=DirectoryRepository(session),
        authorizations=AuthorizationRepository(session),
        outcomes=OutcomeRepository(session),
        clock_settings=ClockSettingRepository(session),
        documents=DocumentRepository(session),
        locations=LocationViewRepository(session),
    )
