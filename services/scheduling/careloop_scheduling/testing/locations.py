"""Announce a location to a running scheduling app as identity does, and wait for
scheduling's view of it.

Identity owns locations and scheduling learns them only from
`careloop.identity.location.created.v1` / `.changed.v1`. Tests that run scheduling
without identity publish those events themselves, on the app's own Kafka topic prefix,
exactly as identity's relay would, so the real consumer builds the view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import jwt
from aiokafka import AIOKafkaProducer

from careloop_contracts import Envelope, to_headers
from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.service import Runtime


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


async def publish_location(
    producer: AIOKafkaProducer,
    topic: str,
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
    """Publish identity's `LocationCreated` (or `LocationChanged`) on `topic` (the identity
    topic under the run's prefix) with `producer`, as identity's relay would; returns the
    event id."""
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
    await producer.send_and_wait(
        topic,
        value=event.to_json(),
        key=event.partition_key().encode(),
        headers=to_headers(envelope),
    )
    return envelope.id


async def announce_location(
    client: httpx.AsyncClient, org_id: str, location_id: str, **fields: Any
) -> str:
    """`publish_location` through the runtime of the in-process app behind `client`."""
    runtime = runtime_of(client)
    return await publish_location(
        runtime.producer,
        runtime.topic(LocationCreated.topic),
        org_id,
        location_id,
        **fields,
    )


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


async def open_location(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    location_id: str,
    *,
    time_zone: str = "America/New_York",
    name: str = "Test Clinic",
    sensitive: bool = False,
    features: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Announce the location (for the organization of `headers`' token) and return
    scheduling's view of it once the consumer applied the event."""
    await announce_location(
        client,
        org_of(headers),
        location_id,
        time_zone=time_zone,
        name=name,
        sensitive=sensitive,
        features=features,
    )
    return await location_view(
        client, headers, location_id, lambda view: view["time_zone"] == time_zone
    )
