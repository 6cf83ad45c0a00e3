"""Test helpers shared by the scheduling service tests: a small practice to book in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import jwt

from careloop_contracts import Envelope, to_headers
from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.service import Runtime

# A Friday; the practice's Monday morning (America/New_York, EST) is 2030-03-04 14:00Z.
NOW = datetime(2030, 3, 1, 15, 0, tzinfo=UTC)
MONDAY_NINE = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)
LOCATION = "loc-north"

Mint = Callable[..., dict[str, str]]


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


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    """The runtime of the app behind an in-process test client (`running_app`)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    runtime: Runtime = transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def org_of(headers: dict[str, str]) -> str:
    """The organization of a test token (its `org` claim; the service verified it)."""
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["org"])


async def announce_location(
    client: httpx.AsyncClient,
    org_id: str,
    location_id: str,
    *,
    time_zone: str = "America/New_York",
    name: str = "Test Clinic",
    sensitive: bool = False,
    features: dict[str, bool] | None = None,
    occurred_at: datetime | None = None,
    changed: bool = False,
    event_id: str | None = None,
) -> str:
    """Publish identity's `LocationCreated` (or `LocationChanged`) on the identity topic,
    as identity's relay would; returns the event id."""
    runtime = runtime_of(client)
    kind = LocationChanged if changed else LocationCreated
    event = kind(
        org_id=org_id,
        location_id=location_id,
        name=name,
        time_zone=time_zone,
        sensitive=sensitive,
        features=features or {},
        occurred_at=occurred_at or datetime.now(UTC),
    )
    envelope = Envelope(
        id=event_id or str(uuid4()),
        type=event.event_type,
        source="/careloop/identity",
        time=datetime.now(UTC),
        subject=event.partition_key(),
        org_id=org_id,
        location_id=location_id,
    )
    await runtime.producer.send_and_wait(
        runtime.topic(event.topic),
        value=event.to_json(),
        key=event.partition_key().encode(),
        headers=to_headers(envelope),
    )
    return envelope.id


async def location_view(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    location_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda _: True,
    *,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Scheduling's view of the location, once it exists and `until` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/locations/{location_id}", headers=headers)
        if response.status_code == 200 and until(response.json()):
            view: dict[str, Any] = response.json()
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"location view of {location_id}: {response.text}")
        await asyncio.sleep(0.1)


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
    await announce_location(
        client,
        org_of(headers),
        location_id,
        time_zone=time_zone,
        name=display_name,
        sensitive=sensitive,
        features=features,
    )
    await location_view(client, headers, location_id)
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
