"""The `trail` consumer: every access record published on any event topic joins the log."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_audit.store.repository import AuditLog, NewRecord
from careloop_contracts import TOPICS, AccessRecorded, Envelope, Event
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime

EVENT_TOPICS = tuple(sorted(name for name, spec in TOPICS.items() if spec.kind == "events"))
"""Every service stream: any service may publish access records on its own topic."""


def _new_record(envelope: Envelope, event: AccessRecorded) -> NewRecord:
    return NewRecord(
        audit_id=str(event.audit_id),
        event_id=envelope.id,
        org_id=event.org_id,
        actor_id=event.actor_id,
        actor_type=event.actor_type,
        action=event.action,
        outcome=event.outcome,
        outcome_detail=event.outcome_detail,
        patient_id=event.patient_id,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        phi_categories=tuple(event.phi_categories),
        purpose_of_use=event.purpose_of_use,
        source_service=event.source_service,
        source_ip=event.source_ip,
        request_id=event.request_id,
        query_fingerprint=event.query_fingerprint,
        occurred_at=event.occurred_at,
    )


def trail_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the trail consumer, by event type."""

    async def on_access_recorded(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AccessRecorded):  # the kit routes by type; be explicit
            raise TypeError(f"expected AccessRecorded, got {type(event).__name__}")
        await AuditLog(session).append(
            _new_record(envelope, event), recorded_at=runtime.clock.now()
        )

    return {AccessRecorded.event_type: on_access_recorded}


TRAIL_CONSUMER = ConsumerSpec(name="trail", topics=EVENT_TOPICS, handlers=trail_handlers)
