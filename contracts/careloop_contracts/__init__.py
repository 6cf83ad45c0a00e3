"""Careloop event contracts: envelope, versioned event models, topics, generated schemas.

Importing the package imports every event module, so the registry is complete.
"""

from careloop_contracts.audit import AccessRecorded, AuditCheckpointSigned
from careloop_contracts.base import (
    Event,
    UnknownEventType,
    event_class,
    isolated_registry,
    parse,
    registry,
)
from careloop_contracts.envelope import (
    PLATFORM_ORG_ID,
    Envelope,
    EnvelopeError,
    from_headers,
    to_headers,
)
from careloop_contracts.identity import SessionRevoked
from careloop_contracts.messaging import (
    MessageFailed,
    MessageSent,
    MessageSkipped,
    ReplyReceived,
    ReplyReceivedV2,
)
from careloop_contracts.patients import PatientMerged, PatientRegistered, PatientUpdated
from careloop_contracts.referrals import (
    ReferralEscalated,
    ReferralEvent,
    ReferralReceived,
    ReferralStageChanged,
    ReferralStalled,
)
from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentConfirmed,
    AppointmentEvent,
    AppointmentNoShow,
    AppointmentRescheduled,
    ReminderDue,
    RescheduleOffered,
    WaitlistOfferClosed,
    WaitlistSlotOffered,
)
from careloop_contracts.tasks import (
    TaskAssigned,
    TaskCompleted,
    TaskCreated,
    TaskEscalated,
    TaskEvent,
    TaskOverdue,
)
from careloop_contracts.topics import (
    CONSUMER_GROUPS,
    TOPICS,
    ConsumerGroupSpec,
    TopicSpec,
    checkpoint_record_key,
    dead_letter_spec,
    dead_letter_topic,
    prefixed,
    service_topic,
    topic_catalogue,
)

__all__ = [
    "CONSUMER_GROUPS",
    "PLATFORM_ORG_ID",
    "TOPICS",
    "AccessRecorded",
    "AppointmentBooked",
    "AppointmentCancelled",
    "AppointmentCheckedIn",
    "AppointmentConfirmed",
    "AppointmentEvent",
    "AppointmentNoShow",
    "AppointmentRescheduled",
    "AuditCheckpointSigned",
    "ConsumerGroupSpec",
    "Envelope",
    "EnvelopeError",
    "Event",
    "MessageFailed",
    "MessageSent",
    "MessageSkipped",
    "PatientMerged",
    "PatientRegistered",
    "PatientUpdated",
    "ReferralEscalated",
    "ReferralEvent",
    "ReferralReceived",
    "ReferralStageChanged",
    "ReferralStalled",
    "ReminderDue",
    "ReplyReceived",
    "ReplyReceivedV2",
    "RescheduleOffered",
    "SessionRevoked",
    "TaskAssigned",
    "TaskCompleted",
    "TaskCreated",
    "TaskEscalated",
    "TaskEvent",
    "TaskOverdue",
    "TopicSpec",
    "UnknownEventType",
    "WaitlistOfferClosed",
    "WaitlistSlotOffered",
    "checkpoint_record_key",
    "dead_letter_spec",
    "dead_letter_topic",
    "event_class",
    "from_headers",
    "isolated_registry",
    "parse",
    "prefixed",
    "registry",
    "service_topic",
    "to_headers",
    "topic_catalogue",
]
