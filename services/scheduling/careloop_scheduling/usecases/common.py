"""What every use case shares: the service's settings on the runtime, the 422 and the
work of one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import (
    AppointmentEvent,
    ReminderDue,
    RescheduleOffered,
    WaitlistOfferClosed,
    WaitlistSlotOffered,
)
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.problems import ProblemError
from careloop_kit.service import Runtime
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.repository import Repositories

SETTINGS_KEY = "scheduling_settings"

# HL7 PurposeOfUse: the service's own work (offering a freed time, marking a no-show) is
# the practice's operations; a change a patient asks for is the patient's own request.
OPERATIONS, PATIENT_REQUESTED = "HOPERAT", "PATRQT"

LocatedEvent = (
    AppointmentEvent | ReminderDue | RescheduleOffered | WaitlistSlotOffered | WaitlistOfferClosed
)
"""The events scheduling publishes: each names its organization and location."""


class InvalidScheduling(ProblemError):
    status, title, slug = 422, "Invalid scheduling request", "invalid-scheduling"


def system_actor(actor_id: str, org_id: str) -> Principal:
    """The service itself, acting for the practice, as the audit trail names it."""
    return Principal(
        actor_id=actor_id, actor_type="system", org_id=org_id, purpose_of_use=OPERATIONS
    )


def patient_actor(patient_id: str, org_id: str) -> Principal:
    """The patient, acting on a message (a reply, an acceptance), as the trail names it."""
    return Principal(
        actor_id=patient_id, actor_type="patient", org_id=org_id, purpose_of_use=PATIENT_REQUESTED
    )


def settings_of(runtime: Runtime) -> SchedulingSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: SchedulingSettings = runtime.state[SETTINGS_KEY]
    return settings


@dataclass(frozen=True)
class Work:
    """One transaction's work: the service's runtime, the transaction and the
    repositories on it, and the id that ties what it publishes to its cause (a request,
    a patient's reply, an event). Every path that changes an appointment (the endpoints,
    replies, the waitlist, the no-show check) takes one, and what it publishes goes
    through `publish`."""

    runtime: Runtime
    session: AsyncSession
    repos: Repositories
    correlation_id: str | None = None

    async def publish(self, event: LocatedEvent) -> None:
        """Stage `event` in the outbox, in this transaction, under its organization and
        location."""
        await self.runtime.outbox.add(
            self.session,
            event,
            org_id=event.org_id,
            location_id=event.location_id,
            correlation_id=self.correlation_id,
        )

    async def audit(
        self,
        principal: Principal,
        *,
        action: str,
        resource_type: str,
        patient_id: str,
        resource_id: str,
        detail: str | None = None,
    ) -> None:
        """Record, in this transaction, an access to a patient's visits made outside a
        request (a reply, an event, a timer); the correlation id stands in for the
        request id."""
        entry = AuditEntry(
            action=action,
            resource_type=resource_type,
            phi_categories=[CLINICAL],
            patient_id=patient_id,
            resource_id=resource_id,
        )
        await recorder_of(self.runtime).record(
            self.session, principal, entry, outcome_detail=detail, request_id=self.correlation_id
        )
