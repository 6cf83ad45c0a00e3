"""Test helpers shared by the scheduling service tests: a small practice to book in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from careloop_scheduling.testing.locations import open_location

# A Friday; the practice's Monday morning (America/New_York, EST) is 2030-03-04 14:00Z.
NOW = datetime(2030, 3, 1, 15, 0, tzinfo=UTC)
MONDAY_NINE = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)
LOCATION = "loc-north"


@dataclass(frozen=True)
class Practice:
    """One location in New York, one provider there on Monday mornings, a 30-minute type."""

    location_id: str
    provider_id: str
    type_id: str

    def booking(self, patient_id: str, start_at: datetime) -> dict[str, str]:
        return {
            "patient_id": patient_id,
            "provider_id": self.provider_id,
            "appointment_type_id": self.type_id,
            "location_id": self.location_id,
            "start_at": start_at.isoformat(),
        }


async def set_up_practice(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    location_id: str = LOCATION,
    *,
    end: str = "12:00",
    time_zone: str = "America/New_York",
    weekday: int = 0,
    display_name: str = "Test Clinic",
    sensitive: bool = False,
    features: dict[str, bool] | None = None,
) -> Practice:
    """Announce the location as identity does (zone, name, sensitivity, switches) and
    wait for scheduling's view of it; then add a provider, a type and a weekly window."""
    await open_location(
        client,
        headers,
        location_id,
        time_zone=time_zone,
        name=display_name,
        sensitive=sensitive,
        features=features,
    )
    return await open_catalog(client, headers, location_id, end=end, weekday=weekday)


async def open_catalog(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    location_id: str,
    *,
    end: str = "12:00",
    weekday: int = 0,
) -> Practice:
    """A provider at a location scheduling already knows, a 30-minute type and the
    provider's weekly window there (09:00 to `end`)."""
    provider = await client.post(
        "/providers",
        json={"display_name": "Dr. Test", "location_ids": [location_id]},
        headers=headers,
    )
    assert provider.status_code == 201, provider.text
    kind = await client.post(
        "/appointment-types",
        json={"name": "Follow-up", "duration_minutes": 30, "patient_kind": "established"},
        headers=headers,
    )
    assert kind.status_code == 201, kind.text
    window = await client.post(
        f"/providers/{provider.json()['id']}/availability",
        json={"location_id": location_id, "weekday": weekday, "start": "09:00", "end": end},
        headers=headers,
    )
    assert window.status_code == 201, window.text
    return Practice(location_id, provider.json()["id"], kind.json()["id"])
