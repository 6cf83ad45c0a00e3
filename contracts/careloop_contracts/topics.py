"""The Kafka topic catalogue, in one place.

Services create and subscribe to topics by these names; tests isolate themselves by
prefixing the names (``prefixed``). Event streams are keyed by patient id so one
patient's events stay in order on one partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's legal topic names

DAY_MS = 24 * 60 * 60 * 1000
PATIENT_KEY = "The patient id, so one patient's events stay in order."


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One Kafka topic and the settings it is created with."""

    name: str
    partitions: int
    retention_ms: int
    """``-1`` keeps records forever."""
    cleanup_policy: Literal["delete", "compact"]
    description: str
    owner: str
    """The only service that publishes to the topic."""
    kind: Literal["events", "records"] = "events"
    """``events``: CloudEvents-enveloped ``Event`` models. ``records``: a keyed record
    stream with its own key and value format (see the description)."""
    key: str = PATIENT_KEY
    value_type: str | None = None
    """For ``records`` topics: the event type whose JSON schema the record value follows."""

    def config(self) -> dict[str, str]:
        """Topic-level configuration for the Kafka admin client."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


def _event_stream(
    owner: str,
    description: str,
    *,
    partitions: int,
    retention_ms: int = 7 * DAY_MS,
    key: str = PATIENT_KEY,
) -> TopicSpec:
    """The event stream ``careloop.<owner>`` of one service: deleted after
    `retention_ms`, keyed by patient id unless `key` says otherwise."""
    return TopicSpec(
        name=f"careloop.{owner}",
        partitions=partitions,
        retention_ms=retention_ms,
        cleanup_policy="delete",
        owner=owner,
        description=description,
        key=key,
    )


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        _event_stream(
            "patients",
            "Patient record lifecycle (registered, updated, merged) and the access "
            "records of the patients service.",
            partitions=6,
        ),
        _event_stream(
            "scheduling",
            "Appointment lifecycle (booked, cancelled, rescheduled, confirmed, checked "
            "in, no-show) and the access records of the scheduling service.",
            partitions=6,
        ),
        _event_stream(
            "messaging",
            "Outcome of each outbound message (sent, failed, skipped with a reason): "
            "ids, channel and status, never an address or a body.",
            partitions=6,
        ),
        _event_stream(
            "referrals",
            "Referral lifecycle (received, each stage change to outcome reported, stalls and "
            "escalations, prior authorizations and their expiry) and the access records of "
            "the referrals service: ids, stages and codes, never a reason or a packet.",
            partitions=6,
        ),
        _event_stream(
            "tasks",
            "Staff worklist tasks (created, assigned, completed, overdue, escalated): ids, "
            "queues, priorities and outcome codes, never a comment or a note.",
            partitions=6,
            key="The patient id, or the task id for a task that names no patient.",
        ),
        _event_stream(
            "caregaps",
            "Care gaps (opened, each status change to closed or excluded) and the access "
            "records of the care-gaps service: ids, measure ids, statuses and due dates, "
            "never a value or evidence.",
            partitions=6,
        ),
        _event_stream(
            "identity",
            "Session revocations (logout, refresh-token reuse), which every service "
            "that verifies access tokens consumes, locations created and changed "
            "(zone, sensitivity, feature switches), which scheduling keeps its view "
            "from, and the access records of the identity service (logins, "
            "failures, lockouts, MFA changes).",
            partitions=3,
            key=(
                "Per event: session, role and break-glass events by user id; location "
                "events by location id; access records by patient id (org id when no "
                "patient)."
            ),
        ),
        _event_stream(
            "audit",
            "Signed audit checkpoints and the access records of the audit service "
            "itself (exports, accounting of disclosures).",
            partitions=3,
            # Longer than the service streams: the audit consumer falling behind must
            # never cost an access record.
            retention_ms=30 * DAY_MS,
            key=(
                "Per event: access records by patient id (org id when no patient); "
                "checkpoints by one constant key, so they stay in order."
            ),
        ),
        TopicSpec(
            name="careloop.audit.checkpoints",
            partitions=1,
            retention_ms=-1,
            cleanup_policy="compact",
            owner="audit",
            kind="records",
            value_type="careloop.audit.checkpoint.signed.v1",
            key=(
                "The checkpoint's tree size as a 20-digit zero-padded decimal "
                "(checkpoint_record_key), so keys sort in log order and compaction, "
                "which keeps the latest value per key, never drops a checkpoint."
            ),
            description=(
                "External anchor for signed audit checkpoints. Not an event stream: a "
                "compacted, keyed record stream with no CloudEvents headers, whose value "
                "is the JSON of the signed checkpoint (same fields as "
                "careloop.audit.checkpoint.signed.v1). Kept forever, in one partition, "
                "outside the audit database, so a rewritten audit log can be detected "
                "by comparing its recomputed roots with the anchored ones. Re-publishing "
                "a checkpoint is idempotent."
            ),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ConsumerGroupSpec:
    """One consumer group: the service that runs it and the topics it reads.

    Its dead-letter topic (``careloop.dlq.<group id>``) follows from the group id, so
    the list below is also the list of dead-letter topics a deployment creates.
    """

    service: str
    name: str
    topics: tuple[str, ...]
    description: str

    @property
    def group_id(self) -> str:
        return f"careloop.{self.service}.{self.name}"


_EVENT_STREAMS = tuple(sorted(name for name, spec in TOPICS.items() if spec.kind == "events"))

CONSUMER_GROUPS: dict[str, ConsumerGroupSpec] = {
    group.group_id: group
    for group in (
        ConsumerGroupSpec(
            service="audit",
            name="trail",
            topics=_EVENT_STREAMS,
            description="Chains every service's access records into the audit log.",
        ),
        ConsumerGroupSpec(
            service="scheduling",
            name="replies",
            topics=("careloop.messaging",),
            description="Patients' replies (confirm, reschedule, choose, cancel) to appointments.",
        ),
        ConsumerGroupSpec(
            service="scheduling",
            name="waitlist",
            topics=("careloop.scheduling", "careloop.messaging"),
            description="Freed slots offered to the waitlist, and patients' acceptances.",
        ),
        ConsumerGroupSpec(
            service="scheduling",
            name="locations",
            topics=("careloop.identity",),
            description=(
                "Identity's location events: the zone, name, sensitivity and feature "
                "switches scheduling plans and authorizes with."
            ),
        ),
        ConsumerGroupSpec(
            service="patients",
            name="care-relationships",
            topics=("careloop.scheduling",),
            description=(
                "Appointment events: a booked or past appointment at a location opens the "
                "patient's record to that location's staff; a cancellation closes it."
            ),
        ),
        ConsumerGroupSpec(
            service="patients",
            name="referral-relationships",
            topics=("careloop.referrals",),
            description=(
                "Referral events: a referral received at a location opens the patient's "
                "record to that location's staff; leaving the loop before the visit "
                "(declined, cancelled, expired, redirected) closes it."
            ),
        ),
        ConsumerGroupSpec(
            service="patients",
            name="locations",
            topics=("careloop.identity",),
            description=(
                "Identity's location events: which locations are sensitive, whose records "
                "no care relationship at another location opens."
            ),
        ),
        ConsumerGroupSpec(
            service="referrals",
            name="appointments",
            topics=("careloop.scheduling",),
            description=(
                "Appointment events of visits linked to referrals: arrival moves the "
                "referral to seen, a cancellation or no-show back to patient contacted, "
                "a reschedule carries the link to the new appointment."
            ),
        ),
        ConsumerGroupSpec(
            service="tasks",
            name="referrals",
            topics=("careloop.referrals",),
            description=(
                "Referral stalls, escalations, leakage, stage changes and authorizations "
                "running out: the organization's rules put each follow-up on a queue of "
                "the managing location, and escalate a stall's task."
            ),
        ),
        ConsumerGroupSpec(
            service="referrals",
            name="locations",
            topics=("careloop.identity",),
            description=(
                "Identity's location events: the name, zone and sensitivity a message to "
                "a referred patient is written with."
            ),
        ),
        ConsumerGroupSpec(
            service="tasks",
            name="messaging",
            topics=("careloop.messaging",),
            description=(
                "Patients asking for a call back on a message's secure link (a referral "
                "waiting to be booked): a call on the managing location's queue."
            ),
        ),
        ConsumerGroupSpec(
            service="caregaps",
            name="facts",
            topics=("careloop.patients",),
            description=(
                "Patient records and clinical facts: a registration, a change of birth date "
                "or sex, a merge or a fact re-evaluates that patient's gaps."
            ),
        ),
        ConsumerGroupSpec(
            service="caregaps",
            name="appointments",
            topics=("careloop.scheduling",),
            description=(
                "Appointment events: a booked visit of a measure's appointment types marks "
                "the patient's gaps scheduled, a cancellation opens them again; a visit "
                "attributes the patient to its location and provider."
            ),
        ),
        ConsumerGroupSpec(
            service="caregaps",
            name="locations",
            topics=("careloop.identity",),
            description=(
                "Identity's location events: which locations are sensitive, so their gaps "
                "stay visible only to staff scoped to them."
            ),
        ),
        ConsumerGroupSpec(
            service="messaging",
            name="reminders",
            topics=("careloop.scheduling",),
            description="Reminders, reschedule offers and waitlist offers to deliver.",
        ),
        ConsumerGroupSpec(
            service="messaging",
            name="referral-contacts",
            topics=("careloop.referrals",),
            description=(
                "Inbound referrals waiting for the patient to book: a PHI-free text or "
                "email with a secure link that offers a call back."
            ),
        ),
    )
}
"""Every consumer group of every service. A service refuses to start a consumer group
that is not listed here with exactly these topics, so this list cannot drift."""

DEAD_LETTER_PREFIX = "careloop.dlq."
DEAD_LETTER_RETENTION_MS = 30 * DAY_MS


def _check_name(name: str) -> str:
    if not _TOPIC_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a legal Kafka topic name ([A-Za-z0-9._-], <= 249)")
    return name


def dead_letter_topic(group_id: str) -> str:
    """The dead-letter topic of consumer group ``group_id``: ``careloop.dlq.<group_id>``."""
    return _check_name(f"{DEAD_LETTER_PREFIX}{group_id}")


def dead_letter_spec(group_id: str) -> TopicSpec:
    """Settings for a consumer group's dead-letter topic (records keep their original
    key, value and headers, plus failure headers added by the consumer)."""
    return TopicSpec(
        name=dead_letter_topic(group_id),
        partitions=1,
        retention_ms=DEAD_LETTER_RETENTION_MS,
        cleanup_policy="delete",
        owner=group_id,
        description=f"Events consumer group {group_id!r} gave up on after its retries.",
        key="The original record's key.",
    )


def topic_catalogue() -> dict[str, TopicSpec]:
    """Every topic a deployment creates: the service streams and records topics, then
    the dead-letter topic of every consumer group. `make run`, compose and Helm all
    create topics from this (``careloop topics apply``)."""
    catalogue = dict(TOPICS)
    for group_id in CONSUMER_GROUPS:
        spec = dead_letter_spec(group_id)
        catalogue[spec.name] = spec
    return catalogue


def prefixed(name: str, prefix: str | None) -> str:
    """``<prefix>.<name>``, or ``name`` when there is no prefix (tests isolate topics)."""
    if not prefix:
        return name
    return _check_name(f"{prefix.rstrip('.')}.{name}")


def checkpoint_record_key(tree_size: int) -> str:
    """The record key of a checkpoint on ``careloop.audit.checkpoints``."""
    if tree_size < 0:
        raise ValueError("tree_size must be >= 0")
    return f"{tree_size:020d}"


def service_topic(service: str) -> str:
    """The event stream of ``service``: ``careloop.<service>``."""
    return _check_name(f"careloop.{service}")
