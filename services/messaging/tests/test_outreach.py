"""Whom to contact and when: the pure rules of the reminder pipeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from careloop_contracts import messaging as messaging_contract
from careloop_messaging.domain.outreach import (
    ContactData,
    Recipient,
    SkipReason,
    decide,
    local_date_and_time,
    message_kind,
    normalize_phone,
    offer_fields,
    retry_delay,
    valid_choice,
)
from careloop_messaging.domain.templates import Channel, MessageKind

pytestmark = pytest.mark.unit


def contact(**changes: Any) -> ContactData:
    values: dict[str, Any] = {
        "phones": ["(555) 201-3344"],
        "emails": ["Pat@Example.org "],
        "allowed_channels": [Channel.SMS, Channel.EMAIL],
        "preferred_channel": Channel.EMAIL,
        "allow_automated_messages": True,
    }
    values.update(changes)
    return ContactData(**values)


def run(data: ContactData, *, opted: set[Recipient] | None = None, sent: int = 0) -> Any:
    return decide(
        data,
        opted_out=lambda r: r in (opted or set()),
        sent_this_week=sent,
        budget_per_week=3,
        default_country_code="1",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(555) 201-3344", "+15552013344"),
        ("1 555 201 3344", "+15552013344"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 555 0100 123", "+15550100123"),
        ("12", None),
    ],
)
def test_phone_numbers_become_e164(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw, default_country_code="1") == expected


def test_the_preferred_channel_comes_first() -> None:
    assert run(contact()).recipient == Recipient(Channel.EMAIL, "pat@example.org")
    assert run(contact(preferred_channel=None)).recipient == Recipient(Channel.SMS, "+15552013344")


def test_an_opted_out_channel_falls_back_to_the_next_allowed_one() -> None:
    decision = run(contact(), opted={Recipient(Channel.EMAIL, "pat@example.org")})
    assert decision.recipient == Recipient(Channel.SMS, "+15552013344")


def test_the_portal_inbox_is_addressed_by_the_patients_record() -> None:
    portal_first = contact(
        allowed_channels=[Channel.SMS, Channel.PORTAL],
        preferred_channel=Channel.PORTAL,
        patient_id="pat-7",
    )
    assert run(portal_first).recipient == Recipient(Channel.PORTAL, "pat-7")
    # No record id from patients: no inbox to put it in, so the next allowed channel.
    no_record = contact(
        allowed_channels=[Channel.SMS, Channel.PORTAL], preferred_channel=Channel.PORTAL
    )
    assert run(no_record).recipient == Recipient(Channel.SMS, "+15552013344")


def test_skip_reasons_in_order_of_the_patients_own_choices() -> None:
    assert run(contact(allow_automated_messages=False)).skip is SkipReason.AUTOMATED_NOT_ALLOWED
    assert run(contact(allowed_channels=[Channel.PORTAL])).skip is SkipReason.NO_ALLOWED_CHANNEL
    assert run(contact(phones=[], emails=[])).skip is SkipReason.NO_ALLOWED_CHANNEL
    everything = {
        Recipient(Channel.EMAIL, "pat@example.org"),
        Recipient(Channel.SMS, "+15552013344"),
    }
    assert run(contact(), opted=everything).skip is SkipReason.OPTED_OUT
    assert run(contact(), sent=2).recipient is not None
    assert run(contact(), sent=3).skip is SkipReason.CONTACT_BUDGET


def test_local_date_and_time_follow_the_location_zone() -> None:
    start = datetime(2031, 7, 4, 13, 5, tzinfo=UTC)
    assert local_date_and_time(start, "America/Los_Angeles", "en") == ("Fri Jul 4", "6:05 AM")
    assert local_date_and_time(start, "Europe/Madrid", "es") == ("04/07/2031", "15:05")
    assert local_date_and_time(start, "Nowhere/Else", "en") == ("Fri Jul 4", "1:05 PM UTC")


def test_touch_kinds_and_backoff() -> None:
    assert message_kind("confirmation") is MessageKind.CONFIRMATION
    assert message_kind("3_days_before") is MessageKind.REMINDER
    assert message_kind("reschedule_offer") is MessageKind.RESCHEDULE_OFFER
    assert [retry_delay(n, base_s=30) for n in (1, 2, 3)] == [
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=120),
    ]


def test_skip_reasons_are_the_contracts() -> None:
    assert set(get_args(messaging_contract.SkipReason)) == {r.value for r in SkipReason}


OPTIONS = [
    datetime(2031, 3, 5, 14, 0, tzinfo=UTC),
    datetime(2031, 3, 6, 19, 30, tzinfo=UTC),
    datetime(2031, 3, 7, 13, 15, tzinfo=UTC),
    datetime(2031, 3, 8, 13, 15, tzinfo=UTC),
]


def test_offer_fields_list_three_times_in_the_location_zone() -> None:
    # The event may carry up to nine; the message lists the first three.
    fields = offer_fields(OPTIONS, "America/New_York", "en")
    assert fields["options"] == (
        "1) Wed Mar 5 at 9:00 AM; 2) Thu Mar 6 at 2:30 PM; 3) Fri Mar 7 at 8:15 AM"
    )
    assert fields["option_numbers"] == "1, 2 or 3"
    assert (fields["option_2_date"], fields["option_2_time"]) == ("Thu Mar 6", "2:30 PM")
    assert "option_4_date" not in fields
    spanish = offer_fields(OPTIONS[:2], "Europe/Madrid", "es")
    assert spanish["options"] == "1) 05/03/2031 a las 15:00; 2) 06/03/2031 a las 20:30"
    assert spanish["option_numbers"] == "1 o 2"
    assert offer_fields(OPTIONS[:1], "UTC", "en")["option_numbers"] == "1"


def test_a_choice_must_be_one_of_the_listed_options() -> None:
    assert [valid_choice(n, OPTIONS) for n in (0, 1, 3, 4)] == [False, True, True, False]
    assert valid_choice(2, OPTIONS[:1]) is False
