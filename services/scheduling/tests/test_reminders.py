"""Reminder-sequence planning, as the specification: timing, DST, quiet hours, overrides."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop_scheduling.domain.reminders import (
    DEFAULT_SEQUENCE,
    Channel,
    ContactPreferences,
    InvalidReminderConfig,
    PlannedTouch,
    QuietHours,
    ReminderSequence,
    SequenceOverride,
    Touch,
    TouchKind,
    TouchOverride,
    choose_channel,
    local_to_utc,
    plan,
    resolve_sequence,
)

pytestmark = pytest.mark.unit

LA = ZoneInfo("America/Los_Angeles")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def appointment_id() -> str:
    return f"appt-{uuid.uuid4().hex[:12]}"


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    """An aware local datetime; fold=0 (first occurrence) like the planner."""
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def by_name(touches: list[PlannedTouch]) -> dict[str, PlannedTouch]:
    return {t.touch_name: t for t in touches}


def with_morning_of(send_time: time | None = None) -> ReminderSequence:
    return resolve_sequence(
        location=SequenceOverride(
            touches={"morning_of": TouchOverride(enabled=True, send_time=send_time)}
        )
    )


# --- the default sequence ----------------------------------------------------------


def test_booking_five_days_out_gets_confirmation_now_and_two_reminders_at_ten_local() -> None:
    appt = appointment_id()
    start = local(LA, 2027, 6, 15, 9, 30)
    booked = local(LA, 2027, 6, 10, 11, 0)

    planned = plan(appt, start, booked, "America/Los_Angeles")

    assert [t.touch_name for t in planned] == ["confirmation", "3_days_before", "1_day_before"]
    touches = by_name(planned)
    assert touches["confirmation"].fire_at == booked.astimezone(UTC)
    assert touches["confirmation"].kind is TouchKind.AT_BOOKING
    assert touches["3_days_before"].fire_at == utc(2027, 6, 12, 17, 0)  # 10:00 PDT
    assert touches["1_day_before"].fire_at == utc(2027, 6, 14, 17, 0)
    assert all(t.fire_at.tzinfo is UTC for t in planned)
    assert touches["1_day_before"].local_fire_at == local(LA, 2027, 6, 14, 10, 0)
    assert [t.key for t in planned] == [
        f"{appt}:confirmation",
        f"{appt}:3_days_before",
        f"{appt}:1_day_before",
    ]


def test_morning_of_is_off_by_default() -> None:
    assert not DEFAULT_SEQUENCE.touch("morning_of").enabled
    planned = plan("a", local(LA, 2027, 6, 15, 11), local(LA, 2027, 6, 1, 12), LA)
    assert "morning_of" not in by_name(planned)


def test_morning_of_enabled_fires_at_its_local_hour_on_the_day() -> None:
    planned = plan(
        "a", local(LA, 2027, 6, 15, 11), local(LA, 2027, 6, 1, 12), LA, with_morning_of()
    )
    assert [t.touch_name for t in planned][-1] == "morning_of"
    assert by_name(planned)["morning_of"].local_fire_at == local(LA, 2027, 6, 15, 8, 0)


def test_morning_of_after_the_appointment_start_is_skipped() -> None:
    planned = plan(
        "a", local(LA, 2027, 6, 15, 8, 0), local(LA, 2027, 6, 1, 12), LA, with_morning_of()
    )
    assert "morning_of" not in by_name(planned)


# --- daylight saving: calendar days, not 72 hours -----------------------------------


def test_days_before_across_us_spring_forward_stay_at_ten_local() -> None:
    # 2027-03-14 02:00 EST -> 03:00 EDT in New York.
    planned = by_name(plan("a", local(NY, 2027, 3, 15, 9), utc(2027, 3, 1, 15), NY))

    three, one = planned["3_days_before"], planned["1_day_before"]
    assert three.fire_at == utc(2027, 3, 12, 15, 0)  # 10:00 EST
    assert one.fire_at == utc(2027, 3, 14, 14, 0)  # 10:00 EDT
    assert three.local_fire_at.time() == one.local_fire_at.time() == time(10, 0)
    assert three.local_fire_at.utcoffset() == timedelta(hours=-5)
    assert one.local_fire_at.utcoffset() == timedelta(hours=-4)
    # Not "72 hours before": that would be 08:00 local on the 12th.
    assert three.fire_at != local(NY, 2027, 3, 15, 9).astimezone(UTC) - timedelta(hours=72)


def test_days_before_across_us_fall_back_stay_at_ten_local() -> None:
    # 2027-11-07 02:00 EDT -> 01:00 EST in New York.
    planned = by_name(plan("a", local(NY, 2027, 11, 8, 9), utc(2027, 10, 20, 15), NY))

    three, one = planned["3_days_before"], planned["1_day_before"]
    assert three.fire_at == utc(2027, 11, 5, 14, 0)  # 10:00 EDT
    assert one.fire_at == utc(2027, 11, 7, 15, 0)  # 10:00 EST
    assert three.local_fire_at.utcoffset() == timedelta(hours=-4)
    assert one.local_fire_at.utcoffset() == timedelta(hours=-5)
    assert three.local_fire_at.time() == one.local_fire_at.time() == time(10, 0)


def test_berlin_uses_its_own_dst_date() -> None:
    # Europe switches on 2027-03-28, two weeks after the US.
    planned = by_name(plan("a", local(BERLIN, 2027, 3, 29, 9), utc(2027, 3, 1, 9), BERLIN))

    assert planned["3_days_before"].fire_at == utc(2027, 3, 26, 9, 0)  # 10:00 CET
    assert planned["1_day_before"].fire_at == utc(2027, 3, 28, 8, 0)  # 10:00 CEST
    # The same local plan in New York a day later is on EDT throughout.
    ny = by_name(plan("a", local(NY, 2027, 3, 29, 9), utc(2027, 3, 1, 9), NY))
    assert ny["3_days_before"].local_fire_at.utcoffset() == timedelta(hours=-4)


def test_send_time_in_spring_forward_gap_moves_to_first_valid_minute() -> None:
    sequence = resolve_sequence(
        organization=SequenceOverride(
            touches={"1_day_before": TouchOverride(send_time=time(2, 30))}
        )
    )
    planned = by_name(
        plan("a", local(NY, 2027, 3, 15, 9), utc(2027, 3, 1, 15), NY, sequence, quiet_hours=None)
    )
    one = planned["1_day_before"]
    assert one.fire_at == utc(2027, 3, 14, 7, 0)
    assert one.local_fire_at.replace(tzinfo=None) == datetime(2027, 3, 14, 3, 0)


def test_send_time_in_gap_then_in_quiet_hours_moves_to_quiet_end() -> None:
    sequence = resolve_sequence(
        organization=SequenceOverride(
            touches={"1_day_before": TouchOverride(send_time=time(2, 30))}
        )
    )
    planned = by_name(plan("a", local(NY, 2027, 3, 15, 9), utc(2027, 3, 1, 15), NY, sequence))
    assert planned["1_day_before"].local_fire_at == local(NY, 2027, 3, 14, 8, 0)


def test_local_to_utc_gap_and_fold() -> None:
    assert local_to_utc(date(2027, 3, 14), time(2, 30), NY) == utc(2027, 3, 14, 7, 0)
    assert local_to_utc(date(2027, 3, 28), time(2, 15), BERLIN) == utc(2027, 3, 28, 1, 0)
    # Ambiguous 01:30 on fall-back day: the first occurrence (still EDT).
    assert local_to_utc(date(2027, 11, 7), time(1, 30), NY) == utc(2027, 11, 7, 5, 30)
    # Lord Howe moves by 30 minutes.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert local_to_utc(date(2027, 10, 3), time(2, 10), lord_howe) == datetime(
        2027, 10, 3, 2, 30, tzinfo=lord_howe
    ).astimezone(UTC)


# --- quiet hours -------------------------------------------------------------------


def test_confirmation_booked_late_evening_waits_for_quiet_end_next_morning() -> None:
    quiet = QuietHours(start=time(22, 0), end=time(7, 0))
    planned = plan(
        "a", local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 5, 23, 30), LA, quiet_hours=quiet
    )
    assert by_name(planned)["confirmation"].local_fire_at == local(LA, 2027, 6, 6, 7, 0)


def test_confirmation_booked_after_midnight_waits_for_quiet_end_same_morning() -> None:
    quiet = QuietHours(start=time(22, 0), end=time(7, 0))
    planned = plan(
        "a", local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 5, 3, 0), LA, quiet_hours=quiet
    )
    assert by_name(planned)["confirmation"].local_fire_at == local(LA, 2027, 6, 5, 7, 0)


def test_quiet_hours_end_boundary_is_allowed_and_start_boundary_is_quiet() -> None:
    quiet = QuietHours()
    assert quiet.wraps_midnight
    assert not quiet.contains(time(8, 0))
    assert quiet.contains(time(20, 0))
    assert quiet.contains(time(0, 0))
    assert not quiet.contains(time(19, 59, 59))
    daytime = QuietHours(start=time(12, 0), end=time(13, 30))
    assert not daytime.wraps_midnight
    assert daytime.contains(time(12, 0))
    assert not daytime.contains(time(13, 30))


def test_evening_send_time_inside_wrapping_quiet_hours_moves_to_next_morning() -> None:
    sequence = resolve_sequence(
        organization=SequenceOverride(touches={"3_days_before": TouchOverride(send_time=time(21))})
    )
    planned = by_name(plan("a", local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 1, 12), LA, sequence))
    # 21:00 on the 12th is quiet until 08:00 on the 13th.
    assert planned["3_days_before"].local_fire_at == local(LA, 2027, 6, 13, 8, 0)


def test_send_time_inside_daytime_quiet_hours_moves_to_their_end() -> None:
    quiet = QuietHours(start=time(9, 0), end=time(11, 30))
    planned = by_name(
        plan("a", local(LA, 2027, 6, 15, 15), local(LA, 2027, 6, 1, 12), LA, quiet_hours=quiet)
    )
    assert planned["1_day_before"].local_fire_at == local(LA, 2027, 6, 14, 11, 30)


def test_touch_pushed_by_quiet_hours_to_or_past_the_start_is_skipped() -> None:
    # Morning-of at 06:00 for a 07:30 visit: quiet ends at 08:00, after the start.
    planned = plan(
        "a",
        local(LA, 2027, 6, 15, 7, 30),
        local(LA, 2027, 6, 1, 12),
        LA,
        with_morning_of(time(6, 0)),
    )
    names = [t.touch_name for t in planned]
    assert "morning_of" not in names
    assert names == ["confirmation", "3_days_before", "1_day_before"]


def test_confirmation_that_cannot_leave_quiet_hours_before_the_visit_is_skipped() -> None:
    planned = plan("a", local(LA, 2027, 6, 16, 7, 0), local(LA, 2027, 6, 15, 22, 0), LA)
    assert planned == []


# --- late bookings and reschedules -------------------------------------------------


def test_booking_two_days_out_skips_the_three_day_reminder() -> None:
    planned = plan("a", local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 13, 9), LA)
    assert [t.touch_name for t in planned] == ["confirmation", "1_day_before"]


def test_same_day_booking_gets_only_the_confirmation() -> None:
    booked = local(LA, 2027, 6, 15, 9)
    planned = plan("a", local(LA, 2027, 6, 15, 16), booked, LA, with_morning_of())
    assert [(t.touch_name, t.fire_at) for t in planned] == [
        ("confirmation", booked.astimezone(UTC))
    ]


def test_booking_at_or_after_the_start_plans_nothing() -> None:
    start = local(LA, 2027, 6, 15, 9)
    assert plan("a", start, start, LA) == []
    assert plan("a", start, start + timedelta(minutes=5), LA) == []


def test_reminder_too_close_to_the_confirmation_is_dropped() -> None:
    # Booked at 09:00 for tomorrow: the 1-day reminder would follow at 10:00 today.
    start, booked = local(LA, 2027, 6, 15, 15), local(LA, 2027, 6, 14, 9)
    assert [t.touch_name for t in plan("a", start, booked, LA)] == ["confirmation"]
    no_spacing = resolve_sequence(organization=SequenceOverride(min_spacing=timedelta(0)))
    assert [t.touch_name for t in plan("a", start, booked, LA, no_spacing)] == [
        "confirmation",
        "1_day_before",
    ]


def test_reschedule_plans_again_with_the_same_keys() -> None:
    appt = appointment_id()
    first = plan(appt, local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 1, 12), LA)
    moved = plan(appt, local(LA, 2027, 6, 22, 14), local(LA, 2027, 6, 3, 12), LA)

    assert [t.key for t in first] == [t.key for t in moved]
    assert by_name(moved)["1_day_before"].local_fire_at == local(LA, 2027, 6, 21, 10, 0)
    assert by_name(moved)["confirmation"].local_fire_at == local(LA, 2027, 6, 3, 12, 0)
    # Pure: planning twice gives the same plan.
    assert moved == plan(appt, local(LA, 2027, 6, 22, 14), local(LA, 2027, 6, 3, 12), LA)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan("a", datetime(2027, 6, 15, 9), local(LA, 2027, 6, 1), LA)


# --- configuration: org -> location -> appointment type ----------------------------


def test_resolution_most_specific_level_wins() -> None:
    organization = SequenceOverride(
        send_time=time(9, 0), touches={"3_days_before": TouchOverride(enabled=False)}
    )
    location = SequenceOverride(
        send_time=time(11, 0),
        touches={"morning_of": TouchOverride(enabled=True, send_time=time(8, 30))},
    )
    appointment_type = SequenceOverride(
        touches={
            "3_days_before": TouchOverride(enabled=True, days_before=2),
            "7_days_before": Touch("7_days_before", days_before=7, send_time=time(12, 0)),
        }
    )

    sequence = resolve_sequence(organization, location, appointment_type)

    assert sequence.send_time == time(11, 0)
    assert sequence.touch("3_days_before") == Touch("3_days_before", days_before=2)
    assert sequence.touch("morning_of").enabled
    assert sequence.touch("morning_of").send_time == time(8, 30)
    assert [t.name for t in sequence.touches][-1] == "7_days_before"

    planned = plan("a", local(LA, 2027, 6, 15, 13), local(LA, 2027, 6, 1, 12), LA, sequence)
    assert [(t.touch_name, t.local_fire_at) for t in planned] == [
        ("confirmation", local(LA, 2027, 6, 1, 12)),
        ("7_days_before", local(LA, 2027, 6, 8, 12, 0)),
        ("3_days_before", local(LA, 2027, 6, 13, 11, 0)),
        ("1_day_before", local(LA, 2027, 6, 14, 11, 0)),
        ("morning_of", local(LA, 2027, 6, 15, 8, 30)),
    ]


def test_a_level_can_disable_a_touch_the_org_enabled() -> None:
    sequence = resolve_sequence(
        SequenceOverride(touches={"morning_of": TouchOverride(enabled=True)}),
        None,
        SequenceOverride(touches={"1_day_before": TouchOverride(enabled=False)}),
    )
    planned = plan("a", local(LA, 2027, 6, 15, 13), local(LA, 2027, 6, 1, 12), LA, sequence)
    assert [t.touch_name for t in planned] == ["confirmation", "3_days_before", "morning_of"]


def test_resolution_without_overrides_is_the_default() -> None:
    assert resolve_sequence() == DEFAULT_SEQUENCE
    assert DEFAULT_SEQUENCE.send_time == time(10, 0)


def test_override_of_an_unknown_touch_is_rejected() -> None:
    with pytest.raises(InvalidReminderConfig, match="unknown touch"):
        resolve_sequence(SequenceOverride(touches={"2_days_befor": TouchOverride(enabled=True)}))


def test_replacement_touch_must_carry_its_key_name() -> None:
    with pytest.raises(InvalidReminderConfig, match="does not match"):
        resolve_sequence(SequenceOverride(touches={"a": Touch("b")}))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Touch("Bad Name"),
        lambda: Touch("has:colon"),
        lambda: Touch("x", days_before=-1),
        lambda: Touch("x", send_time=time(10, tzinfo=UTC)),
        lambda: ReminderSequence(touches=(Touch("x"), Touch("x"))),
        lambda: ReminderSequence(min_spacing=timedelta(hours=-1)),
        lambda: QuietHours(start=time(8), end=time(8)),
        lambda: resolve_sequence(
            SequenceOverride(touches={"1_day_before": TouchOverride(days_before=-2)})
        ),
    ],
)
def test_invalid_configuration_is_rejected(build: object) -> None:
    assert callable(build)
    with pytest.raises(InvalidReminderConfig):
        build()


# --- consent and channel ----------------------------------------------------------


def test_no_automated_messages_means_no_touches_at_all() -> None:
    prefs = ContactPreferences(allow_automated_messages=False)
    start, booked = local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 1, 12)
    assert plan("a", start, booked, LA, preferences=prefs) == []


def test_no_allowed_channel_means_no_touches() -> None:
    prefs = ContactPreferences(allowed_channels=())
    start, booked = local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 1, 12)
    assert plan("a", start, booked, LA, preferences=prefs) == []


def test_preferred_channel_is_used_when_allowed() -> None:
    prefs = ContactPreferences(
        allowed_channels=(Channel.SMS, Channel.EMAIL), preferred_channel=Channel.EMAIL
    )
    planned = plan("a", local(LA, 2027, 6, 15, 9), local(LA, 2027, 6, 1, 12), LA, preferences=prefs)
    assert {t.channel for t in planned} == {Channel.EMAIL}


@pytest.mark.parametrize(
    ("allowed", "preferred", "expected"),
    [
        ((Channel.EMAIL, Channel.SMS), None, Channel.SMS),
        ((Channel.PORTAL, Channel.EMAIL), Channel.VOICE, Channel.EMAIL),
        ((Channel.VOICE, Channel.PORTAL), None, Channel.PORTAL),
        ((Channel.VOICE,), None, Channel.VOICE),
        ((), Channel.SMS, None),
    ],
)
def test_channel_fallback(
    allowed: tuple[Channel, ...], preferred: Channel | None, expected: Channel | None
) -> None:
    prefs = ContactPreferences(allowed_channels=allowed, preferred_channel=preferred)
    assert choose_channel(prefs) == expected


# --- properties over zones, appointment and booking times --------------------------

ZONES = [
    "America/Los_Angeles",
    "America/New_York",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Europe/Berlin",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Tehran",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "UTC",
]

wall_times = st.times().map(lambda t: t.replace(second=0, microsecond=0))


@st.composite
def quiet_hours(draw: st.DrawFn) -> QuietHours | None:
    if draw(st.booleans()):
        return None
    start, end = draw(wall_times), draw(wall_times)
    if start == end:
        return None
    return QuietHours(start=start, end=end)


@st.composite
def sequences(draw: st.DrawFn) -> ReminderSequence:
    touches = {
        "morning_of": TouchOverride(enabled=draw(st.booleans()), send_time=draw(wall_times)),
        "3_days_before": TouchOverride(send_time=draw(st.none() | wall_times)),
    }
    return resolve_sequence(
        SequenceOverride(
            send_time=draw(wall_times),
            min_spacing=draw(st.sampled_from([timedelta(0), timedelta(hours=4)])),
            touches=touches,
        )
    )


# Uniform times rarely land near a DST change, where the interesting bugs live.
DST_CHANGES_2027 = [
    utc(2027, 3, 14, 7),  # US spring forward
    utc(2027, 11, 7, 6),  # US fall back
    utc(2027, 3, 28, 1),  # EU spring forward
    utc(2027, 10, 31, 1),  # EU fall back
    utc(2027, 4, 3, 14),  # New Zealand and Lord Howe fall back
    utc(2027, 9, 25, 14),  # New Zealand spring forward
    utc(2027, 10, 2, 15),  # Lord Howe spring forward (30 minutes)
]
near_dst_changes = st.builds(
    lambda change, delta: change + delta,
    st.sampled_from(DST_CHANGES_2027),
    st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=5)),
)


@settings(max_examples=400, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    )
    | near_dst_changes,
    lead=st.timedeltas(min_value=timedelta(hours=-2), max_value=timedelta(days=30)),
    sequence=sequences(),
    quiet=quiet_hours(),
)
def test_planned_touches_respect_every_rule(
    zone_name: str,
    start: datetime,
    lead: timedelta,
    sequence: ReminderSequence,
    quiet: QuietHours | None,
) -> None:
    zone = ZoneInfo(zone_name)
    booked = start - lead
    planned = plan("appt", start, booked, zone_name, sequence, quiet)

    for touch in planned:
        assert booked <= touch.fire_at < start
        assert touch.fire_at.tzinfo is UTC
        # Via astimezone: Python never finds an ambiguous (fold) local time equal
        # to an instant in another zone (PEP 495), so == would fail in a fold.
        assert touch.local_fire_at.astimezone(UTC) == touch.fire_at
        if quiet is not None:
            assert not quiet.contains(touch.fire_at.astimezone(zone).time())
        if touch.kind is TouchKind.DAYS_BEFORE:
            spec = sequence.touch(touch.touch_name)
            send_time = spec.send_time or sequence.send_time
            expected_day = start.astimezone(zone).date() - timedelta(days=spec.days_before)
            if quiet is None:
                # Fires on its day, at its send time unless a DST gap moved it.
                assert touch.local_fire_at.date() == expected_day
                assert touch.local_fire_at.time() >= send_time
    fire_times = [t.fire_at for t in planned]
    assert fire_times == sorted(fire_times)
    assert len({t.key for t in planned}) == len(planned)
    for earlier, later in itertools.pairwise(planned):
        if later.kind is TouchKind.DAYS_BEFORE:
            assert later.fire_at - earlier.fire_at >= sequence.min_spacing
    if lead > timedelta(0) and quiet is None:
        # With nothing in the way, a future booking always gets its confirmation.
        assert planned[0].touch_name == "confirmation"
        assert planned[0].fire_at == booked
