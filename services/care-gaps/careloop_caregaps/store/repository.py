"""The one way to reach the care-gaps tables: `repositories(session)`, one repository
per aggregate, all on the caller's session (and so in its transaction)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.store.campaigns import CampaignRepository
from careloop_caregaps.store.gaps import GapRepository
from careloop_caregaps.store.jobs import JobRepository
from careloop_caregaps.store.locations import LocationViewRepository
from careloop_caregaps.store.measures import MeasureSettingsRepository
from careloop_caregaps.store.patients import PatientRepository


@dataclass(frozen=True)
class Repositories:
    patients: PatientRepository
    gaps: GapRepository
    jobs: JobRepository
    measures: MeasureSettingsRepository
    locations: LocationViewRepository
    campaigns: CampaignRepository


def repositories(session: AsyncSession) -> Repositories:
    """Every repository on the caller's session."""
    return Repositories(
        patients=PatientRepository(session),
        gaps=GapRepository(session),
        jobs=JobRepository(session),
        measures=MeasureSettingsRepository(session),
        locations=LocationViewRepository(session),
        campaigns=CampaignRepository(session),
    )
