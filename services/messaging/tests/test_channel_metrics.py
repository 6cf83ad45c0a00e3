"""Every channel counts its attempts on `careloop_messages_sent_total{channel, outcome}`
of the service that built it: the SMS channel against the Twilio double over real HTTP,
email against an SMTP port nobody listens on."""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest

from careloop_kit.clock import SystemClock
from careloop_kit.infra.ports import free_port
from careloop_kit.metrics import ServiceMetrics, reset_current, set_current
from careloop_kit.smtp import SmtpConfig
from careloop_kit.testing.apps import serve_in_task
from careloop_messaging.channels.email import EmailIdentity, SmtpEmailChannel
from careloop_messaging.channels.log import LogChannel
from careloop_messaging.channels.sms import TwilioClient, TwilioSmsChannel
from careloop_messaging.domain.channels import DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel
from careloop_messaging.testing.twilio_double import TwilioDouble

pytestmark = pytest.mark.service


def sent(metrics: ServiceMetrics) -> dict[tuple[str, str], float]:
    """{(channel, outcome): count} from the service's Prometheus page."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.render().decode().splitlines():
        if not line.startswith("careloop_messages_sent_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        counts[(labels["channel"].strip('"'), labels["outcome"].strip('"'))] = float(
            line.rsplit(" ", 1)[1]
        )
    return counts


def message(channel: Channel, to: str) -> OutboundMessage:
    return OutboundMessage(
        message_id=uuid.uuid4().hex,
        channel=channel,
        to=to,
        body="Lakeside Clinic: reminder for Mar 3 at 9:15 AM. Reply STOP to opt out.",
        sender_name="Lakeside Clinic",
        subject="Appointment reminder" if channel is Channel.EMAIL else None,
    )


async def test_sms_attempts_are_counted_by_outcome_without_the_number() -> None:
    metrics = ServiceMetrics("messaging", clock=SystemClock())
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    async with serve_in_task(double.app) as url, httpx.AsyncClient(timeout=5) as http:
        client = TwilioClient(
            http, account_sid=double.account_sid, auth_token=double.auth_token, base_url=url
        )
        channel = TwilioSmsChannel(client, from_number="+15550199000", meter=metrics.meter)
        assert (await channel.send(message(Channel.SMS, "+15550100123"))).ok
        assert (await channel.send(message(Channel.SMS, "+15550100124"))).ok
        double.fail_next(1, status=429)
        throttled = await channel.send(message(Channel.SMS, "+15550100125"))
        assert throttled.retryable
        refused = await channel.send(message(Channel.SMS, "12"))
        assert refused.status is DeliveryStatus.FAILED
        assert not refused.retryable

    assert sent(metrics) == {("sms", "queued"): 2, ("sms", "retry"): 1, ("sms", "failed"): 1}
    assert "+1555" not in metrics.render().decode()


async def test_a_channel_built_during_start_up_counts_on_that_services_meter() -> None:
    metrics = ServiceMetrics("messaging", clock=SystemClock())
    other = ServiceMetrics("scheduling", clock=SystemClock())
    identity = EmailIdentity(
        from_address="notifications@careloop.example.test",
        message_id_domain="careloop.example.test",
    )
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout_s=2)
    token = set_current(metrics)
    try:
        # No meter given: the one of the service whose start-up builds the channel.
        channel = SmtpEmailChannel(config, identity)
    finally:
        reset_current(token)
    result = await channel.send(message(Channel.EMAIL, "patient@example.test"))
    assert result.retryable

    assert sent(metrics) == {("email", "retry"): 1}
    assert sent(other) == {}


async def test_the_log_stand_in_counts_what_it_would_have_sent() -> None:
    metrics = ServiceMetrics("messaging", clock=SystemClock())
    channel = LogChannel(Channel.SMS, meter=metrics.meter)
    result = await channel.send(message(Channel.SMS, "+15550100126"))
    assert result.ok
    assert sent(metrics) == {("sms", "sent"): 1}
    assert "+1555" not in metrics.render().decode()
