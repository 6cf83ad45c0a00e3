"""The Twilio client and SMS channel against the local Twilio double, over real HTTP."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task
from careloop_messaging.channels.sms import (
    SIGNATURE_HEADER,
    StatusCallback,
    TwilioClient,
    TwilioPermanentError,
    TwilioRetryableError,
    TwilioSmsChannel,
    parse_status_callback,
    verify_signature,
)
from careloop_messaging.domain.channels import DeliveryStatus, OutboundChannel, OutboundMessage
from careloop_messaging.domain.templates import Channel
from careloop_messaging.testing.twilio_double import TwilioDouble

pytestmark = pytest.mark.service


@dataclass
class Rig:
    double: TwilioDouble
    client: TwilioClient
    base_url: str
    http: httpx.AsyncClient


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    # Obviously fake credentials, new for every test.
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    async with serve_in_task(double.app) as url, httpx.AsyncClient(timeout=5) as http:
        client = TwilioClient(
            http, account_sid=double.account_sid, auth_token=double.auth_token, base_url=url
        )
        yield Rig(double, client, url, http)


def sms_message(to: str = "+15550100123") -> OutboundMessage:
    return OutboundMessage(
        message_id=uuid.uuid4().hex,
        channel=Channel.SMS,
        to=to,
        body="Lakeside Clinic: reminder for Mar 3 at 9:15 AM. Reply STOP to opt out.",
        sender_name="Lakeside Clinic",
    )


async def test_create_message_round_trip(rig: Rig) -> None:
    created = await rig.client.create_message(
        to="+15550100123",
        body="hello",
        from_="+15550199000",
        status_callback="https://messaging.example.test/twilio/status",
    )
    assert created.sid.startswith("SM")
    assert len(created.sid) == 34
    assert created.status == "queued"
    assert created.error_code is None
    [recorded] = rig.double.messages
    assert (recorded.sid, recorded.to, recorded.body, recorded.from_) == (
        created.sid,
        "+15550100123",
        "hello",
        "+15550199000",
    )
    assert recorded.status_callback == "https://messaging.example.test/twilio/status"


async def test_messaging_service_sid_instead_of_from(rig: Rig) -> None:
    service_sid = "MG" + secrets.token_hex(16)
    await rig.client.create_message(to="+15550100123", body="hi", messaging_service_sid=service_sid)
    [recorded] = rig.double.messages
    assert recorded.messaging_service_sid == service_sid
    assert recorded.from_ is None


async def test_wrong_credentials_are_a_permanent_error(rig: Rig) -> None:
    client = TwilioClient(
        rig.http, account_sid=rig.double.account_sid, auth_token="wrong", base_url=rig.base_url
    )
    with pytest.raises(TwilioPermanentError) as error:
        await client.create_message(to="+15550100123", body="x", from_="+15550199000")
    assert (error.value.http_status, error.value.code) == (401, 20003)
    assert rig.double.messages == []


async def test_invalid_number_is_a_permanent_400(rig: Rig) -> None:
    with pytest.raises(TwilioPermanentError) as error:
        await rig.client.create_message(to="not-a-number", body="x", from_="+15550199000")
    assert (error.value.http_status, error.value.code) == (400, 21211)
    assert not error.value.retryable


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_429_and_5xx_are_retryable_then_the_retry_succeeds(rig: Rig, status: int) -> None:
    rig.double.fail_next(1, status=status)
    with pytest.raises(TwilioRetryableError) as error:
        await rig.client.create_message(to="+15550100123", body="x", from_="+15550199000")
    assert error.value.http_status == status
    created = await rig.client.create_message(to="+15550100123", body="x", from_="+15550199000")
    assert created.status == "queued"
    assert rig.double.requests == 2
    assert len(rig.double.messages) == 1


async def test_unreachable_twilio_is_retryable() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        client = TwilioClient(
            http,
            account_sid="AC" + secrets.token_hex(16),
            auth_token=secrets.token_hex(16),
            base_url=f"http://127.0.0.1:{free_port()}",
        )
        with pytest.raises(TwilioRetryableError, match="unreachable"):
            await client.create_message(to="+15550100123", body="x", from_="+15550199000")


async def test_the_sms_channel_reports_queued_retryable_and_permanent(rig: Rig) -> None:
    channel: OutboundChannel = TwilioSmsChannel(rig.client, from_number="+15550199000")

    queued = await channel.send(sms_message())
    assert queued.status is DeliveryStatus.QUEUED
    assert queued.provider_id == rig.double.messages[0].sid

    rig.double.fail_next(1, status=429)
    throttled = await channel.send(sms_message())
    assert (throttled.status, throttled.retryable) == (DeliveryStatus.FAILED, True)
    assert throttled.error is not None
    assert "20429" in throttled.error

    refused = await channel.send(sms_message(to="12"))
    assert (refused.status, refused.retryable) == (DeliveryStatus.FAILED, False)
    # Twilio's error text quotes the number; the delivery record keeps only the code.
    assert refused.error == "Twilio HTTP 400, code 21211"


async def test_status_callbacks_arrive_signed(rig: Rig) -> None:
    received: list[tuple[bool, StatusCallback]] = []

    async def status(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        valid = verify_signature(
            rig.double.auth_token, str(request.url), form, request.headers.get(SIGNATURE_HEADER)
        )
        received.append((valid, parse_status_callback(form)))
        return Response(status_code=204 if valid else 403)

    receiver = Starlette(routes=[Route("/twilio/status", status, methods=["POST"])])
    async with serve_in_task(receiver) as receiver_url:
        callback_url = f"{receiver_url}/twilio/status?delivery=d-{uuid.uuid4().hex[:6]}"
        channel = TwilioSmsChannel(
            rig.client, from_number="+15550199000", status_callback_url=callback_url
        )
        result = await channel.send(sms_message())
        assert result.provider_id is not None
        sent = await rig.double.fire_status_callback(result.provider_id, "sent")
        failed = await rig.double.fire_status_callback(
            result.provider_id, "undelivered", error_code=30003
        )

    assert (sent.status_code, failed.status_code) == (204, 204)
    assert [(valid, cb.status, cb.error_code) for valid, cb in received] == [
        (True, "sent", None),
        (True, "undelivered", 30003),
    ]
    assert all(cb.message_sid == result.provider_id for _, cb in received)


async def test_a_callback_signed_with_another_token_is_rejected(rig: Rig) -> None:
    received: list[bool] = []

    async def status(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        received.append(
            verify_signature(
                "some-other-token", str(request.url), form, request.headers.get(SIGNATURE_HEADER)
            )
        )
        return Response(status_code=403)

    receiver = Starlette(routes=[Route("/cb", status, methods=["POST"])])
    async with serve_in_task(receiver) as receiver_url:
        created = await rig.client.create_message(
            to="+15550100123", body="x", from_="+15550199000", status_callback=f"{receiver_url}/cb"
        )
        response = await rig.double.fire_status_callback(created.sid, "delivered")
    assert response.status_code == 403
    assert received == [False]
