"""Settings of the scheduling service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_kit.settings import KitSettings


class SchedulingSettings(KitSettings):
    http_port: int = Field(8104, description="Port of the scheduling API.")
    max_slot_results: int = Field(
        500, description="Open slots one `GET /slots` answer lists at most."
    )
    min_booking_notice_minutes: int = Field(
        0,
        description=(
            "Minutes ahead of now a slot must start to be offered or booked "
            "(0: any slot not yet started)."
        ),
    )
    reminder_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description=(
            "Seconds between two scans for due reminder timers (a reminder fires at most "
            "this late; every replica scans, they share the work)."
        ),
    )
    no_show_grace_minutes: int = Field(
        30,
        ge=0,
        le=24 * 60,
        description=(
            "Minutes after an appointment's start at which a visit still not checked in "
            "is marked `noshow` automatically. 30 covers the usual 10-15 minute late-"
            "arrival policy plus a busy front desk checking the patient in late, yet "
            "records the miss within the same clinic session (staff can still mark it "
            "earlier by hand)."
        ),
    )
    neutral_practice_name: str = Field(
        "Your care team",
        min_length=1,
        max_length=200,
        description=(
            "Name reminders of a sensitive location (behavioral health and similar) are "
            "signed with, instead of the practice's display name."
        ),
    )
    reschedule_offer_options: int = Field(
        3,
        ge=1,
        le=9,
        description=(
            "Open slots offered when a patient replies `R` (reschedule); an SMS lists them "
            "numbered, and a reply is one digit, hence at most 9."
        ),
    )
    reschedule_min_notice_minutes: int = Field(
        120,
        ge=0,
        description=(
            "Minutes ahead of now an offered slot must start at least, so the patient has "
            "time to read the offer, answer and get there."
        ),
    )
    reschedule_search_days: int = Field(
        14,
        ge=1,
        le=62,
        description="Days ahead searched for open slots to offer a patient who replied `R`.",
    )
    reschedule_offer_ttl_hours: int = Field(
        48,
        ge=1,
        description=(
            "Hours a reschedule offer stays valid; a numbered reply after that books "
            "nothing and brings a fresh offer (the old options are likely taken)."
        ),
    )
    waitlist_offer_batch: int = Field(
        3,
        ge=1,
        le=50,
        description=(
            "Waitlisted patients a freed time is offered to at once, in waitlist order; the "
            "first to accept books it. 3 fills most times in one round while telling few "
            "patients that a time they wanted is gone."
        ),
    )
    waitlist_offer_ttl_minutes: int = Field(
        60,
        ge=5,
        le=7 * 24 * 60,
        description=(
            "Minutes a waitlist offer can be accepted before it goes to the next patients "
            "in line (never later than `waitlist_min_notice_minutes` before the start)."
        ),
    )
    waitlist_min_notice_minutes: int = Field(
        60,
        ge=0,
        description=(
            "Minutes before its start after which a freed time is no longer offered (and an "
            "offer no longer accepted): the patient needs time to get there."
        ),
    )
