"""Email over SMTP to a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from careloop_kit.infra.ports import free_port
from careloop_kit.smtp import SmtpConfig
from careloop_kit.testing.smtp import SmtpCollector
from careloop_kit.testing.smtp import smtp_server as local_smtp_server
from careloop_messaging.channels.email import EmailIdentity, SmtpEmailChannel
from careloop_messaging.domain.channels import DeliveryStatus, OutboundChannel, OutboundMessage
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    SenderProfile,
    TemplateKey,
    TemplateRenderer,
)

pytestmark = pytest.mark.service

IDENTITY = EmailIdentity(
    from_address="notifications@careloop.example.test",
    message_id_domain="careloop.example.test",
    unsubscribe_mailto="mailto:unsubscribe@careloop.example.test",
)


@dataclass
class SmtpServer:
    collector: SmtpCollector
    port: int


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with local_smtp_server() as (collector, port):
        yield SmtpServer(collector, port)


def channel_for(server: SmtpServer, **config: Any) -> SmtpEmailChannel:
    settings = {"security": "none", "timeout_s": 5.0, **config}
    return SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=server.port, **settings), IDENTITY)


def rendered_email(sender: SenderProfile, to: str) -> OutboundMessage:
    template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.EMAIL, "en")]
    rendered = TemplateRenderer().render(
        template,
        {
            "appointment_date": "Tuesday, March 3",
            "appointment_time": "9:15 AM",
            "secure_link": "https://care.example.test/m/Zx81Qp",
        },
        sender=sender,
    )
    assert rendered.subject is not None
    return OutboundMessage(
        message_id=uuid.uuid4().hex,
        channel=Channel.EMAIL,
        to=to,
        subject=rendered.subject,
        body=rendered.body,
        html_body=rendered.html_body,
        sender_name=rendered.sender_name,
        unsubscribe_url="https://care.example.test/unsubscribe/u-123",
    )


async def test_a_rendered_reminder_arrives_with_the_headers_we_promise(
    smtp_server: SmtpServer,
) -> None:
    channel: OutboundChannel = channel_for(smtp_server)
    message = rendered_email(SenderProfile("Lakeside Family Clinic"), "pat@example.test")

    result = await channel.send(message)

    assert result.status is DeliveryStatus.SENT
    assert result.provider_id == f"<{message.message_id}@careloop.example.test>"
    [envelope] = smtp_server.collector.envelopes
    [received] = smtp_server.collector.messages
    assert envelope.rcpt_tos == ["pat@example.test"]
    assert envelope.mail_from == IDENTITY.from_address
    assert str(received["From"]) == ("Lakeside Family Clinic <notifications@careloop.example.test>")
    assert received["Subject"] == "Appointment reminder from Lakeside Family Clinic"
    assert received["Message-ID"] == result.provider_id
    assert received["List-Unsubscribe"] == (
        "<mailto:unsubscribe@careloop.example.test>, <https://care.example.test/unsubscribe/u-123>"
    )
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.get_content_type() == "multipart/alternative"
    plain = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "Tuesday, March 3 at 9:15 AM" in plain.get_content()
    assert 'href="https://care.example.test/m/Zx81Qp"' in html.get_content()


async def test_a_sensitive_location_sends_under_the_neutral_name(smtp_server: SmtpServer) -> None:
    sender = SenderProfile(
        "Hope Behavioral Health", location_name="Hope Recovery Center", sensitive=True
    )
    await channel_for(smtp_server).send(rendered_email(sender, "pat@example.test"))

    [received] = smtp_server.collector.messages
    assert received["From"].addresses[0].display_name == "Your care team"
    raw = received.as_string()
    assert "Hope" not in raw
    assert "Recovery" not in raw


async def test_a_4xx_refusal_is_retryable(smtp_server: SmtpServer) -> None:
    result = await channel_for(smtp_server).send(
        rendered_email(SenderProfile("Lakeside"), "greylisted@example.test")
    )
    assert (result.status, result.retryable) == (DeliveryStatus.FAILED, True)
    assert result.error is not None
    assert "450" in result.error
    assert "greylisted" not in result.error
    assert smtp_server.collector.messages == []


async def test_a_5xx_refusal_is_permanent(smtp_server: SmtpServer) -> None:
    result = await channel_for(smtp_server).send(
        rendered_email(SenderProfile("Lakeside"), "nobody@example.test")
    )
    assert (result.status, result.retryable) == (DeliveryStatus.FAILED, False)
    assert result.error is not None
    assert "550" in result.error


async def test_starttls_required_but_not_offered_fails_without_sending(
    smtp_server: SmtpServer,
) -> None:
    result = await channel_for(smtp_server, security="starttls").send(
        rendered_email(SenderProfile("Lakeside"), "pat@example.test")
    )
    assert (result.status, result.retryable) == (DeliveryStatus.FAILED, False), result.error
    assert smtp_server.collector.messages == []


async def test_no_server_is_retryable() -> None:
    channel = SmtpEmailChannel(
        SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout_s=2.0), IDENTITY
    )
    result = await channel.send(rendered_email(SenderProfile("Lakeside"), "pat@example.test"))
    assert (result.status, result.retryable) == (DeliveryStatus.FAILED, True)
