"""A consumer group whose events of a few kinds all go to one use-case step.

Most consumers are that: a service keeps its view of locations from identity's two
location events, patients and referrals follow scheduling's appointment events. Only the
step differs, so the handlers are declared here once: each event of the listed kinds
reaches `step(runtime, session, event)` in the transaction of the kit's inbox mark (a
redelivered event is a no-op); the topic's other events are skipped, and an event whose
model is not one of the kinds (a type registered under a listed name by mistake) is
refused, so it dead-letters instead of reaching the step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime

Step = Callable[[Runtime, AsyncSession, Any], Awaitable[object]]


def step_consumer(
    name: str, kinds: Sequence[type[Event]], step: Step, *, described_as: str
) -> ConsumerSpec:
    """The consumer group `name` on the one topic of `kinds`: each of them goes to
    `step`; `described_as` names them in the refusal of anything else."""
    topics = {kind.topic for kind in kinds}
    if len(topics) != 1:
        raise ValueError(f"consumer {name}: its events travel on {sorted(topics)}, not one topic")
    accepted = tuple(kinds)

    def handlers(runtime: Runtime) -> Mapping[str, Handler]:
        async def on_event(session: AsyncSession, envelope: Envelope, event: Event) -> None:
            if not isinstance(event, accepted):
                raise TypeError(f"expected {described_as}, got {type(event).__name__}")
            await step(runtime, session, event)

        return {kind.event_type: on_event for kind in accepted}

    return ConsumerSpec(name=name, topics=(topics.pop(),), handlers=handlers)
