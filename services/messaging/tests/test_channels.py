"""The channel port: every adapter speaks it; email building details."""

from __future__ import annotations

import uuid

import pytest

from careloop_kit.clock import SystemClock
from careloop_messaging.channels.email import EmailIdentity, build_email
from careloop_messaging.channels.portal import PortalInboxChannel
from careloop_messaging.domain.channels import OutboundMessage
from careloop_messaging.domain.templates import Channel

pytestmark = pytest.mark.unit

IDENTITY = EmailIdentity("notifications@careloop.example.test", "careloop.example.test")


def message(channel: Channel, **extra: str) -> OutboundMessage:
    return OutboundMessage(
        message_id=uuid.uuid4().hex,
        channel=channel,
        to="pat@example.test",
        body="See https://care.example.test/m/x",
        sender_name="Lakeside Clinic",
        subject="A message from Lakeside Clinic",
        **extra,
    )


async def test_an_adapter_refuses_another_channels_message() -> None:
    # Refused before any storage is touched: the inbox is never given an SMS to keep.
    # (Storing portal messages is covered against PostgreSQL in test_templates_inbox.py.)
    portal = PortalInboxChannel(
        sessionmaker=None,  # type: ignore[arg-type]
        cipher=None,  # type: ignore[arg-type]
        clock=SystemClock(),
    )
    with pytest.raises(ValueError, match="cannot send a sms message"):
        await portal.send(message(Channel.SMS))


def test_a_retry_carries_the_same_message_id() -> None:
    original = message(Channel.EMAIL)
    first, again = build_email(original, IDENTITY), build_email(original, IDENTITY)
    assert (
        first["Message-ID"]
        == again["Message-ID"]
        == (f"<{original.message_id}@careloop.example.test>")
    )


def test_plain_only_email_without_unsubscribe_headers() -> None:
    built = build_email(message(Channel.EMAIL), IDENTITY)
    assert built.get_content_type() == "text/plain"
    assert "List-Unsubscribe" not in built


def test_a_mailto_only_unsubscribe_has_no_one_click_header() -> None:
    identity = EmailIdentity(
        "notifications@careloop.example.test",
        "careloop.example.test",
        unsubscribe_mailto="mailto:unsubscribe@careloop.example.test",
    )
    built = build_email(message(Channel.EMAIL), identity)
    assert built["List-Unsubscribe"] == "<mailto:unsubscribe@careloop.example.test>"
    assert "List-Unsubscribe-Post" not in built


def test_header_injection_through_the_subject_is_impossible() -> None:
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        build_email(
            OutboundMessage(
                message_id=uuid.uuid4().hex,
                channel=Channel.EMAIL,
                to="pat@example.test",
                body="x",
                sender_name="Lakeside",
                subject="Hello\r\nBcc: attacker@example.test",
            ),
            IDENTITY,
        )
