"""Event classes are named by the rules, registered by type, and parsed back."""

import re
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from careloop_contracts import (
    AccessRecorded,
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentConfirmed,
    AppointmentNoShow,
    AppointmentRescheduled,
    AuditCheckpointSigned,
    CallbackRequested,
    ClinicalFactRecorded,
    Event,
    GapOpened,
    GapStatusChanged,
    MessageFailed,
    MessageSent,
    MessageSkipped,
    OutreachRequested,
    OutreachUnanswered,
    PatientMerged,
    PatientRegistered,
    PatientUpdated,
    ReminderDue,
    ReplyReceived,
    ReplyReceivedV2,
    RescheduleOffered,
    SessionRevoked,
    UnknownEventType,
    WaitlistOfferClosed,
    WaitlistSlotOffered,
    isolated_registry,
    parse,
    registry,
)
from careloop_contracts.identity import (
    BreakGlassGranted,
    LocationChanged,
    LocationCreated,
    UserRolesChanged,
    feature_enabled,
)
from careloop_contracts.referrals import (
    AuthorizationExpiring,
    AuthorizationRecorded,
    ReferralContactRequested,
    ReferralEscalated,
    ReferralLeaked,
    ReferralReceived,
    ReferralStageChanged,
    ReferralStalled,
)
from careloop_contracts.tasks import (
    TaskAssigned,
    TaskCompleted,
    TaskCreated,
    TaskEscalated,
    TaskOverdue,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_registry_holds_every_event_by_type() -> None:
    assert registry() == {
        "careloop.audit.access.recorded.v1": AccessRecorded,
        "careloop.audit.checkpoint.signed.v1": AuditCheckpointSigned,
        "careloop.caregaps.gap.opened.v1": GapOpened,
        "careloop.caregaps.gap.status_changed.v1": GapStatusChanged,
        "careloop.caregaps.outreach.requested.v1": OutreachRequested,
        "careloop.caregaps.outreach.unanswered.v1": OutreachUnanswered,
        "careloop.identity.break_glass.granted.v1": BreakGlassGranted,
        "careloop.identity.location.changed.v1": LocationChanged,
        "careloop.identity.location.created.v1": LocationCreated,
        "careloop.identity.session.revoked.v1": SessionRevoked,
        "careloop.identity.user.roles_changed.v1": UserRolesChanged,
        "careloop.messaging.message.failed.v1": MessageFailed,
        "careloop.messaging.message.sent.v1": MessageSent,
        "careloop.messaging.message.skipped.v1": MessageSkipped,
        "careloop.messaging.reply.received.v1": ReplyReceived,
        "careloop.messaging.reply.received.v2": ReplyReceivedV2,
        "careloop.messaging.callback.requested.v1": CallbackRequested,
        "careloop.patients.fact.recorded.v1": ClinicalFactRecorded,
        "careloop.patients.patient.merged.v1": PatientMerged,
        "careloop.patients.patient.registered.v1": PatientRegistered,
        "careloop.patients.patient.updated.v1": PatientUpdated,
        "careloop.referrals.authorization.expiring.v1": AuthorizationExpiring,
        "careloop.referrals.authorization.recorded.v1": AuthorizationRecorded,
        "careloop.referrals.referral.contact_requested.v1": ReferralContactRequested,
        "careloop.referrals.referral.escalated.v1": ReferralEscalated,
        "careloop.referrals.referral.leaked.v1": ReferralLeaked,
        "careloop.referrals.referral.received.v1": ReferralReceived,
        "careloop.referrals.referral.stage_changed.v1": ReferralStageChanged,
        "careloop.referrals.referral.stalled.v1": ReferralStalled,
        "careloop.scheduling.appointment.booked.v1": AppointmentBooked,
        "careloop.scheduling.appointment.cancelled.v1": AppointmentCancelled,
        "careloop.scheduling.appointment.checked_in.v1": AppointmentCheckedIn,
        "careloop.scheduling.appointment.confirmed.v1": AppointmentConfirmed,
        "careloop.scheduling.appointment.no_show.v1": AppointmentNoShow,
        "careloop.scheduling.appointment.rescheduled.v1": AppointmentRescheduled,
        "careloop.scheduling.reminder.due.v1": ReminderDue,
        "careloop.scheduling.reschedule.offered.v1": RescheduleOffered,
        "careloop.scheduling.waitlist.offer_closed.v1": WaitlistOfferClosed,
        "careloop.scheduling.waitlist.slot_offered.v1": WaitlistSlotOffered,
        "careloop.tasks.task.assigned.v1": TaskAssigned,
        "careloop.tasks.task.completed.v1": TaskCompleted,
        "careloop.tasks.task.created.v1": TaskCreated,
        "careloop.tasks.task.escalated.v1": TaskEscalated,
        "careloop.tasks.task.overdue.v1": TaskOverdue,
    }


def test_parse_round_trips_and_ignores_unknown_fields() -> None:
    event = PatientUpdated(
        patient_id="pat-1",
        org_id="org-1",
        changed_fields=["telecom.email", "address"],
        version=3,
        updated_at=NOW,
    )
    assert parse(event.event_type, event.to_json()) == event
    with_extra = event.to_json()[:-1] + b',"added_later":"x"}'
    assert parse(event.event_type, with_extra) == event


def test_parse_unknown_type_and_invalid_payload() -> None:
    with pytest.raises(UnknownEventType, match=re.escape("careloop.nope.thing.done.v1")):
        parse("careloop.nope.thing.done.v1", b"{}")
    assert issubclass(UnknownEventType, LookupError)
    with pytest.raises(ValidationError):
        parse(PatientRegistered.event_type, b'{"patient_id": "p"}')


def test_events_are_frozen_and_hashable() -> None:
    event = PatientRegistered(patient_id="p", org_id="o", registered_at=NOW)
    with pytest.raises(ValidationError):
        event.patient_id = "other"  # type: ignore[misc]
    assert hash(event) == hash(PatientRegistered(patient_id="p", org_id="o", registered_at=NOW))


def test_derived_class_facts() -> None:
    assert PatientRegistered.service == "patients"
    assert PatientRegistered.event_version == 1
    assert PatientRegistered.topic_for("patients") == "careloop.patients"
    with pytest.raises(ValueError, match="patients"):
        PatientRegistered.topic_for("scheduling")


def test_access_recorded_goes_to_the_emitters_topic() -> None:
    assert AccessRecorded.topic_for("scheduling") == "careloop.scheduling"
    assert AccessRecorded.topic_for("patients") == "careloop.patients"


def access(**changes: object) -> AccessRecorded:
    fields: dict[str, object] = {
        "audit_id": uuid4(),
        "occurred_at": NOW,
        "org_id": "org-1",
        "actor_id": "user-1",
        "actor_type": "user",
        "action": "read",
        "outcome": "success",
        "patient_id": "pat-1",
        "resource_type": "Patient",
        "phi_categories": ["demographics"],
        "source_service": "patients",
    }
    return AccessRecorded.model_validate({**fields, **changes})


def test_partition_keys() -> None:
    assert PatientRegistered(patient_id="p", org_id="o", registered_at=NOW).partition_key() == "p"
    merged = PatientMerged(
        surviving_patient_id="a", merged_patient_id="b", org_id="o", merged_at=NOW
    )
    assert merged.partition_key() == "b"
    assert access().partition_key() == "pat-1"
    assert access(patient_id=None, action="query").partition_key() == "org-1"
    checkpoint = AuditCheckpointSigned(
        tree_size=10, root_hash="ab" * 32, signed_at=NOW, key_version=1, signature="c2ln"
    )
    assert checkpoint.partition_key() == AuditCheckpointSigned.event_type


def test_access_recorded_defaults_and_guards() -> None:
    assert access().purpose_of_use == "TREAT"
    with pytest.raises(ValidationError):
        access(action="peek")
    with pytest.raises(ValidationError):
        access(query_fingerprint="family=Smith")  # a value, not a key list
    assert access(query_fingerprint="birthdate,family").query_fingerprint == "birthdate,family"


def test_changed_fields_hold_names_not_values() -> None:
    with pytest.raises(ValidationError):
        PatientUpdated(
            patient_id="p",
            org_id="o",
            changed_fields=["email=jane@example.org"],
            version=2,
            updated_at=NOW,
        )


@pytest.mark.parametrize(
    "bad_type",
    [
        "careloop.patients.patient.registered",  # no version
        "careloop.patients.patient.registered.V1",
        "careloop.Patients.patient.registered.v1",
        "acme.patients.patient.registered.v1",
        "careloop.patients.registered.v1",  # no entity
        "careloop.patients.patient.registered.v0",
    ],
)
def test_bad_type_name_raises_at_class_creation(bad_type: str) -> None:
    with isolated_registry(), pytest.raises(TypeError, match="careloop"):

        class Bad(Event):
            event_type = bad_type
            topic = "careloop.patients"
            patient_id: str


@pytest.mark.parametrize("bad_topic", ["careloop.referrals", "patients", "careloop.patients.x"])
def test_topic_must_be_the_types_service_stream(bad_topic: str) -> None:
    with isolated_registry(), pytest.raises(TypeError, match=re.escape("careloop.patients")):

        class Bad(Event):
            event_type = "careloop.patients.patient.archived.v1"
            topic = bad_topic
            patient_id: str


def test_missing_topic_raises() -> None:
    with isolated_registry(), pytest.raises(TypeError, match="topic"):

        class Bad(Event):
            event_type = "careloop.patients.patient.archived.v1"
            patient_id: str


def test_key_fields_must_exist() -> None:
    with isolated_registry(), pytest.raises(TypeError, match="key_fields"):

        class Bad(Event):
            event_type = "careloop.patients.patient.archived.v1"
            topic = "careloop.patients"
            subject_id: str


def test_shared_type_must_not_declare_a_topic() -> None:
    with isolated_registry(), pytest.raises(TypeError, match="topic_for"):

        class Bad(Event):
            event_type = "careloop.audit.thing.recorded.v1"
            topic = "careloop.audit"
            emitted_by_any_service = True
            patient_id: str


def test_a_type_can_be_defined_only_once() -> None:
    with isolated_registry(registry()), pytest.raises(TypeError, match="new version"):

        class PatientRegisteredAgain(Event):
            event_type = "careloop.patients.patient.registered.v1"
            topic = "careloop.patients"
            patient_id: str


def test_subclassing_a_concrete_event_needs_a_new_type() -> None:
    with isolated_registry(registry()):
        with pytest.raises(TypeError, match="own event_type"):

            class Sneaky(PatientRegistered):
                pass

        class PatientRegisteredV2(PatientRegistered):
            """A new version reusing the v1 fields."""

            event_type = "careloop.patients.patient.registered.v2"
            topic = "careloop.patients"

        assert registry()["careloop.patients.patient.registered.v2"] is PatientRegisteredV2
        assert PatientRegisteredV2.event_version == 2
    assert "careloop.patients.patient.registered.v2" not in registry()


def test_location_events_are_keyed_by_location_and_switches_default_on() -> None:
    event = LocationChanged(
        org_id="org-1",
        location_id="loc-7",
        name="North Clinic",
        time_zone="America/Chicago",
        sensitive=True,
        features={"reminders": False},
        occurred_at=NOW,
    )
    assert event.partition_key() == "loc-7"
    assert parse(event.event_type, event.to_json()) == event
    assert not feature_enabled(event.features, "reminders")
    assert feature_enabled(event.features, "waitlist")
