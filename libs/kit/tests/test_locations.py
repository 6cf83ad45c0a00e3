"""The kit's one location consumer: both location events reach the service's step with
the runtime and the transaction they came with; the group and topic are identity's."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope
from careloop_contracts.identity import LocationChanged, LocationCreated, SessionRevoked
from careloop_kit.locations import location_consumer, logged_if_stale
from careloop_kit.service import Runtime

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
STATE: dict[str, Any] = {
    "org_id": "org-1",
    "location_id": "loc-1",
    "name": "Synthetic Clinic (demo)",
    "time_zone": "America/Chicago",
    "sensitive": False,
    "features": {},
    "occurred_at": NOW,
}


def _envelope(event_type: str) -> Envelope:
    return Envelope(type=event_type, source="/careloop/identity", time=NOW, org_id="org-1")


async def test_both_location_events_reach_the_step_with_runtime_and_session() -> None:
    applied: list[tuple[object, object, object]] = []

    async def apply_location(runtime: Runtime, session: AsyncSession, event: Any) -> bool:
        applied.append((runtime, session, event))
        return True

    spec = location_consumer(apply_location)
    runtime, session = cast(Runtime, object()), cast(AsyncSession, object())
    handlers = spec.handlers(runtime)

    assert spec.name == "locations"
    assert tuple(spec.topics) == (LocationCreated.topic,)
    assert set(handlers) == {LocationCreated.event_type, LocationChanged.event_type}
    created, changed = LocationCreated(**STATE), LocationChanged(**STATE)
    await handlers[LocationCreated.event_type](session, _envelope(created.event_type), created)
    await handlers[LocationChanged.event_type](session, _envelope(changed.event_type), changed)
    assert applied == [(runtime, session, created), (runtime, session, changed)]


async def test_another_event_under_a_location_type_is_refused_not_applied() -> None:
    async def apply_location(runtime: Runtime, session: AsyncSession, event: Any) -> bool:
        raise AssertionError("a non-location event must not be applied")

    handlers = location_consumer(apply_location).handlers(cast(Runtime, object()))
    stray = SessionRevoked(
        session_id="s-1", org_id="org-1", user_id="u-1", revoked_at=NOW, reason="logout"
    )
    with pytest.raises(TypeError, match="expected a location event, got SessionRevoked"):
        await handlers[LocationCreated.event_type](
            cast(AsyncSession, object()), _envelope(LocationCreated.event_type), stray
        )


def test_a_stale_location_event_is_logged_on_the_services_own_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("careloop_someservice.usecases.locations")
    event = LocationChanged(**STATE)

    with caplog.at_level(logging.INFO, logger=log.name):
        assert logged_if_stale(log, event, True) is True
        assert caplog.records == []
        assert logged_if_stale(log, event, False) is False

    (record,) = caplog.records
    assert record.name == log.name
    assert record.getMessage() == (
        f"location loc-1: {LocationChanged.event_type} of {NOW.isoformat()} is older than "
        "the view, skipped"
    )
