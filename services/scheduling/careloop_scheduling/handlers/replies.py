"""The replies consumer: a patient's answer to a message (`ReplyReceivedV2` on
`careloop.messaging`, and v1 records still on the topic) goes to
`usecases.replies.apply_reply`, in the transaction of the kit's inbox mark, so a
redelivered reply is a no-op."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event, ReplyReceived, ReplyReceivedV2
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_scheduling.usecases.replies import Answer, apply_reply


def reply_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the replies consumer: `ReplyReceivedV2` and the v1 records still on
    the topic; the kit skips the other messaging events (known types without a
    handler), it does not dead-letter them."""

    async def on_reply(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        await apply_reply(
            runtime,
            session,
            Answer.of(event),
            correlation_id=envelope.correlation_id or envelope.id,
        )

    return {ReplyReceived.event_type: on_reply, ReplyReceivedV2.event_type: on_reply}


REPLIES_CONSUMER = ConsumerSpec(
    name="replies", topics=(ReplyReceivedV2.topic,), handlers=reply_handlers
)
