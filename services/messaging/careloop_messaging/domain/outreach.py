"""Whom to contact, on which channel, and when to try again: pure rules, no I/O.

A reminder touch becomes at most one message. Before anything is sent the patient's
own choices win (automated messages allowed? which channels?), then opt-outs, then the
contact budget shared by every program, because every automated message goes through
messaging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from careloop_messaging.domain.templates import OFFER_OPTIONS_SHOWN, Channel, MessageKind

BUDGET_WINDOW = timedelta(days=7)
"""The contact budget counts automated messages over a rolling week."""

DELIVERABLE_CHANNELS = (Channel.SMS, Channel.EMAIL, Channel.PORTAL)
"""Channels the delivery worker sends on."""


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    OPTED_OUT = "opted_out"
    NO_ALLOWED_CHANNEL = "no_allowed_channel"
    AUTOMATED_NOT_ALLOWED = "automated_not_allowed"
    CONTACT_BUDGET = "contact_budget"
    PATIENT_NOT_FOUND = "patient_not_found"


@dataclass(frozen=True)
class ContactData:
    """What messaging may know of a patient: addresses and channel choices only."""

    phones: Sequence[str]
    emails: Sequence[str]
    allowed_channels: Sequence[Channel]
    preferred_channel: Channel | None
    allow_automated_messages: bool
    language: str | None = None
    patient_id: str | None = None
    """The patient's record id: the portal inbox's address."""


@dataclass(frozen=True)
class Recipient:
    channel: Channel
    address: str
    """Normalized: E.164 for SMS, lower-case for email; the patient's record id for the
    portal inbox."""


@dataclass(frozen=True)
class Decision:
    recipient: Recipient | None
    skip: SkipReason | None

    @staticmethod
    def send(recipient: Recipient) -> Decision:
        return Decision(recipient, None)

    @staticmethod
    def skipped(reason: SkipReason) -> Decision:
        return Decision(None, reason)


def normalize_phone(raw: str, *, default_country_code: str) -> str | None:
    """E.164 (`+<digits>`) or None when the number cannot be one.

    A number stored without a country code gets `default_country_code`; a leading 1 on
    an 11-digit number under the North American plan is taken as the country code.
    """
    digits = "".join(ch for ch in raw if ch.isdigit())
    has_country_code = raw.strip().startswith("+") or (
        default_country_code == "1" and len(digits) == 11 and digits.startswith("1")
    )
    e164 = digits if has_country_code else default_country_code + digits
    return f"+{e164}" if 8 <= len(e164) <= 15 else None


def normalize_email(raw: str) -> str:
    return raw.strip().lower()


def candidate_recipients(contact: ContactData, *, default_country_code: str) -> list[Recipient]:
    """Reachable recipients in the patient's order of preference (preferred first)."""
    order = [c for c in contact.allowed_channels if c in DELIVERABLE_CHANNELS]
    if contact.preferred_channel in order:
        order.remove(contact.preferred_channel)
        order.insert(0, contact.preferred_channel)
    recipients: list[Recipient] = []
    for channel in order:
        if channel is Channel.SMS:
            phones = (
                normalize_phone(p, default_country_code=default_country_code)
                for p in contact.phones
            )
            phone = next((p for p in phones if p), None)
            if phone:
                recipients.append(Recipient(Channel.SMS, phone))
        elif channel is Channel.EMAIL and contact.emails:
            recipients.append(Recipient(Channel.EMAIL, normalize_email(contact.emails[0])))
        elif channel is Channel.PORTAL and contact.patient_id:
            recipients.append(Recipient(Channel.PORTAL, contact.patient_id))
    return recipients


def decide(
    contact: ContactData,
    *,
    opted_out: Callable[[Recipient], bool],
    sent_this_week: int,
    budget_per_week: int,
    default_country_code: str,
    requested: Channel | None = None,
) -> Decision:
    """Pick the recipient of one automated message, or say why there is none.

    `requested` (a campaign step's channel) wins over the patient's preference when the
    patient allows that channel, we can reach them on it and they have not opted out of
    it; otherwise the usual order applies, as if nothing had been asked."""
    if not contact.allow_automated_messages:
        return Decision.skipped(SkipReason.AUTOMATED_NOT_ALLOWED)
    candidates = candidate_recipients(contact, default_country_code=default_country_code)
    if not candidates:
        return Decision.skipped(SkipReason.NO_ALLOWED_CHANNEL)
    reachable = [r for r in candidates if not opted_out(r)]
    if not reachable:
        return Decision.skipped(SkipReason.OPTED_OUT)
    if sent_this_week >= budget_per_week:
        return Decision.skipped(SkipReason.CONTACT_BUDGET)
    asked = next((r for r in reachable if r.channel is requested), None)
    return Decision.send(asked or reachable[0])


OFFER_TOUCH = "reschedule_offer"
"""The `touch` of a reschedule-offer message (reminder touches are named by scheduling)."""

WAITLIST_OFFER_TOUCH = "waitlist_offer"
"""The `touch` of a waitlist offer's message (touch key `<offer_id>:waitlist_offer`)."""

WAITLIST_CLOSED_TOUCH = "waitlist_closed"
"""The `touch` of the "that time is gone" message (touch key `<offer_id>:waitlist_closed`)."""

WAITLIST_NOTIFIED_REASONS = frozenset({"taken", "answered_late"})
"""Reasons of `WaitlistOfferClosed` that get a "that time is gone" message: another
patient took it, or the patient's own Y came too late. An expired, accepted or
withdrawn offer sends nothing (the offer said until when; a booking sends its own
confirmation; a patient who left the list asked for nothing)."""


def waitlist_touch_key(offer_id: str, touch: str) -> str:
    """`<offer_id>:<touch>`: one offer message and one "gone" message per offer."""
    return f"{offer_id}:{touch}"


def offer_id_of(touch_key: str) -> str:
    """The offer id a waitlist message's touch key holds."""
    return touch_key.rsplit(":", 1)[0]


UNSOLICITED_EXEMPT_TOUCHES = frozenset({OFFER_TOUCH, WAITLIST_OFFER_TOUCH, WAITLIST_CLOSED_TOUCH})
"""Touches that answer the patient's own request: they neither wait for nor use up the
contact budget, which exists to cap unsolicited contacts. A reschedule offer follows
their R reply; a waitlist offer is what they asked for by joining the waitlist, and the
"gone" message closes an offer they were sent (or answers their own Y). Refusing the
answer a patient asked for would be worse than a fourth message that week, and it must
not cost them a later reminder either."""


REFERRAL_CONTACT_TOUCH = "referral_contact"
"""A referral waiting to be booked (`ReferralContactRequested`); its touch key is the
referrals service's contact key, `<referral id>:contact:v<version>`."""


def referral_id_of(touch_key: str) -> str:
    """The referral a referral contact's touch key names."""
    return touch_key.split(":contact:", 1)[0]


CAREGAP_OUTREACH_TOUCH = "caregap_outreach"
"""A care-gap campaign step (`OutreachRequested`); its touch key is care-gaps' outreach
key (campaign, patient and step), so each step is one message."""

_TOUCH_KINDS = {
    "confirmation": MessageKind.CONFIRMATION,
    OFFER_TOUCH: MessageKind.RESCHEDULE_OFFER,
    WAITLIST_OFFER_TOUCH: MessageKind.WAITLIST_OFFER,
    WAITLIST_CLOSED_TOUCH: MessageKind.WAITLIST_CLOSED,
    REFERRAL_CONTACT_TOUCH: MessageKind.REFERRAL_CONTACT,
    CAREGAP_OUTREACH_TOUCH: MessageKind.CHECKUP,
}


def message_kind(touch: str) -> MessageKind:
    """The template kind of a message's touch (scheduling names the reminder touches)."""
    return _TOUCH_KINDS.get(touch, MessageKind.REMINDER)


def shown_options(options: Sequence[datetime]) -> list[datetime]:
    """The offered times a message lists, numbered from 1; a numbered reply may only pick
    one of these."""
    return list(options[:OFFER_OPTIONS_SHOWN])


def valid_choice(choice: int, options: Sequence[datetime]) -> bool:
    """Whether a numbered reply picks one of the listed options."""
    return 1 <= choice <= len(shown_options(options))


_OR = {"en": "or", "es": "o"}


def offer_fields(options: Sequence[datetime], time_zone: str, language: str) -> dict[str, str]:
    """Template fields of a reschedule offer: each listed time in the location's zone,
    numbered, and the numbers to reply with ("1, 2 or 3")."""
    shown = shown_options(options)
    fields: dict[str, str] = {}
    listed: list[str] = []
    for number, start in enumerate(shown, start=1):
        day, time = local_date_and_time(start, time_zone, language)
        fields[f"option_{number}_date"] = day
        fields[f"option_{number}_time"] = time
        at = "at" if language == "en" else "a las"
        listed.append(f"{number}) {day} {at} {time}")
    numbers = [str(n) for n in range(1, len(shown) + 1)]
    word = _OR.get(language, _OR["en"])
    fields["options"] = "; ".join(listed)
    fields["option_numbers"] = (
        numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} {word} {numbers[-1]}"
    )
    return fields


def local_date_and_time(start_at: datetime, time_zone: str, language: str) -> tuple[str, str]:
    """The visit's date and time as the patient reads them, in the location's zone.

    An unknown zone falls back to UTC with the zone named, rather than a wrong local time.
    """
    try:
        local = start_at.astimezone(ZoneInfo(time_zone))
        suffix = ""
    except (ZoneInfoNotFoundError, ValueError):
        local = start_at.astimezone(ZoneInfo("UTC"))
        suffix = " UTC"
    if language == "en":
        day = f"{local:%a} {local:%b} {local.day}"
        hour = local.hour % 12 or 12
        return day, f"{hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'}{suffix}"
    return f"{local.day:02d}/{local.month:02d}/{local.year}", f"{local:%H:%M}{suffix}"


def retry_delay(attempts: int, *, base_s: float) -> timedelta:
    """Exponential backoff after `attempts` failed attempts (1 -> base, 2 -> 2x base ...)."""
    return timedelta(seconds=base_s * 2 ** max(0, attempts - 1))
