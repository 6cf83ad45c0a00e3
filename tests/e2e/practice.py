"""The practice the scheduling e2e tests open: one location in a time zone where it is
daytime when the tests run, one provider, one visit type and a day of availability.

The e2e practices book a visit and expect the at-booking confirmation at once. Quiet
hours (20:00-08:00 local by default) rightly hold that text until morning, so a
practice fixed in one zone made these tests fail whenever CI ran in that zone's
evening. The zones below are at most five hours apart around the globe, so one of
them is always within three hours of local midday. The zone is chosen once per
test session, so every e2e practice shares it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

import careloop_scheduling
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_scheduling.app import create_app as create_scheduling
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.testing.locations import open_location

from .test_messaging_reminders import PROVIDER_NAME, VISIT_TYPE, Chain

CANDIDATE_ZONES = (
    "Pacific/Honolulu",
    "America/Chicago",
    "America/Sao_Paulo",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Tokyo",
)
_MIDDAY_HOURS = 12.5


def daytime_zone(now: datetime | None = None) -> ZoneInfo:
    """The candidate zone whose local time at `now` is closest to midday."""
    instant = now or datetime.now(UTC)

    def distance_from_midday(zone: ZoneInfo) -> float:
        local = instant.astimezone(zone)
        return abs(local.hour + local.minute / 60 - _MIDDAY_HOURS)

    return min((ZoneInfo(name) for name in CANDIDATE_ZONES), key=distance_from_midday)


PRACTICE_ZONE = daytime_zone()


PRACTICE_NAME = "Bayview Family Practice"
LOCATION = "loc-north"


@dataclass(frozen=True)
class Practice:
    provider_id: str
    type_id: str
    day: date
    """Five days after the clock's now, in the practice's zone: the provider works 09-17."""

    def at(self, hour: int) -> datetime:
        """That day at `hour` o'clock, practice time."""
        return datetime.combine(self.day, time(hour), PRACTICE_ZONE)


async def open_practice(
    scheduling: httpx.AsyncClient, admin: dict[str, str], now: datetime
) -> Practice:
    """Give the location its zone and name, add the provider and the visit type, and open the
    provider's availability on the practice day."""
    day = (now + timedelta(days=5)).astimezone(PRACTICE_ZONE).date()
    # Identity owns locations: announce it as identity's relay would and wait for
    # scheduling's view.
    await open_location(
        scheduling, admin, LOCATION, time_zone=PRACTICE_ZONE.key, name=PRACTICE_NAME
    )
    provider = await scheduling.post(
        "/providers",
        json={"display_name": PROVIDER_NAME, "location_ids": [LOCATION]},
        headers=admin,
    )
    assert provider.status_code == 201, provider.text
    kind = await scheduling.post(
        "/appointment-types",
        json={"name": VISIT_TYPE, "duration_minutes": 30, "patient_kind": "established"},
        headers=admin,
    )
    assert kind.status_code == 201, kind.text
    window = await scheduling.post(
        f"/providers/{provider.json()['id']}/availability",
        json={"location_id": LOCATION, "weekday": day.weekday(), "start": "09:00", "end": "17:00"},
        headers=admin,
    )
    assert window.status_code == 201, window.text
    return Practice(provider_id=provider.json()["id"], type_id=kind.json()["id"], day=day)


async def scheduling_beside(
    chain: Chain, make_database: Callable[[str], Awaitable[str]]
) -> tuple[Any, FrozenClock]:
    """A scheduling app on the chain's Kafka, Vault and identity, with its own migrated
    database and a clock frozen at now; reminders fire only when the test says so."""
    dsn = await make_database("scheduling")
    await upgrade_async(Path(careloop_scheduling.__file__).parent / "migrations", dsn)
    settings = chain.messaging_settings
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    app = create_scheduling(
        SchedulingSettings(
            environment="test",
            database_url=dsn,
            kafka_bootstrap=settings.kafka_bootstrap,
            vault_addr=settings.vault_addr,
            vault_token=chain.vault_tokens["scheduling"],
            topic_prefix=settings.topic_prefix,
            auth_jwks_url=f"{chain.identity_url}/.well-known/jwks.json",
            reminder_poll_interval_s=3600,
            log_json=False,
        ),
        clock=clock,
    )
    return app, clock
