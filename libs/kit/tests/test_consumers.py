"""`step_consumer`: one handler per listed kind, all reaching the one step; a consumer
whose kinds travel on different topics is refused when it is declared."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationCreated
from careloop_contracts.scheduling import APPOINTMENT_EVENTS
from careloop_kit.consumers import step_consumer
from careloop_kit.service import Runtime

pytestmark = pytest.mark.unit


async def _step(runtime: Runtime, session: AsyncSession, event: Any) -> None:
    return None


def test_every_kind_gets_a_handler_on_their_one_topic() -> None:
    spec = step_consumer("appointments", APPOINTMENT_EVENTS, _step, described_as="an event")
    handlers = spec.handlers(cast(Runtime, object()))
    assert spec.name == "appointments"
    assert tuple(spec.topics) == ("careloop.scheduling",)
    assert set(handlers) == {kind.event_type for kind in APPOINTMENT_EVENTS}


def test_kinds_on_two_topics_are_refused() -> None:
    with pytest.raises(ValueError, match="not one topic"):
        step_consumer(
            "mixed", (*APPOINTMENT_EVENTS, LocationCreated), _step, described_as="an event"
        )
