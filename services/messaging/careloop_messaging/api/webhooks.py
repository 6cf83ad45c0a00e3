"""Provider webhooks. No bearer token by design: Twilio cannot hold one. Each request is
authenticated instead by its `X-Twilio-Signature` (HMAC-SHA1 under our auth token over
the public URL and the form), checked before anything in the form is trusted."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response

from careloop_contracts.messaging import ReplyIntentV2
from careloop_kit.problems import Forbidden, ProblemError
from careloop_kit.service import RuntimeDep, SessionDep
from careloop_messaging.channels.sms import (
    SIGNATURE_HEADER,
    InvalidWebhook,
    Keyword,
    parse_inbound_message,
    parse_status_callback,
    verify_signature,
)
from careloop_messaging.channels.sms import MessageStatus as TwilioStatus
from careloop_messaging.domain.outreach import MessageStatus, normalize_phone
from careloop_messaging.usecases.context import settings_of
from careloop_messaging.usecases.sms import Consent, receive_sms_reply, record_delivery_status

router = APIRouter(tags=["webhooks"])

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


async def _verified_form(
    request: Request, runtime: RuntimeDep, public_url: str | None
) -> dict[str, str]:
    settings = settings_of(runtime)
    # Parsed by hand: Starlette's form parser needs python-multipart, which the workspace
    # does not install, and Twilio sends only urlencoded forms.
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    # Twilio signs the URL it called, which behind a proxy is the public one.
    url = public_url or str(request.url)
    token = settings.twilio_auth_token.get_secret_value()
    if not verify_signature(token, url, pairs, request.headers.get(SIGNATURE_HEADER)):
        raise Forbidden("The X-Twilio-Signature does not match this request.")
    return dict(pairs)


async def _signed_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    settings = settings_of(runtime)
    return await _verified_form(request, runtime, settings.twilio_status_callback_url)


async def _signed_inbound_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    settings = settings_of(runtime)
    return await _verified_form(request, runtime, settings.twilio_inbound_url)


SignedForm = Annotated[dict[str, str], Depends(_signed_form)]
SignedInboundForm = Annotated[dict[str, str], Depends(_signed_inbound_form)]


# The reports a message's row takes: every other Twilio status changes nothing.
_REPORTED: dict[TwilioStatus, Literal[MessageStatus.DELIVERED, MessageStatus.FAILED]] = {
    TwilioStatus.DELIVERED: MessageStatus.DELIVERED,
    TwilioStatus.READ: MessageStatus.DELIVERED,
    TwilioStatus.UNDELIVERED: MessageStatus.FAILED,
    TwilioStatus.FAILED: MessageStatus.FAILED,
}


@router.post(STATUS_PATH, status_code=204)
async def twilio_status(form: SignedForm, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Twilio delivery status callback (signed; no bearer token)."""
    try:
        callback = parse_status_callback(form)
    except InvalidWebhook as exc:
        raise ProblemError(str(exc)) from exc
    status = _REPORTED.get(callback.status)
    if status is not None:
        error = (
            None
            if status is MessageStatus.DELIVERED
            else f"Twilio status {callback.status} (code {callback.error_code})"
        )
        await record_delivery_status(
            runtime, session, provider_id=callback.message_sid, status=status, error=error
        )
    # An unknown sid is answered 204 too: an error would only make Twilio retry.
    return Response(status_code=204)


_INTENTS: dict[Keyword, ReplyIntentV2] = {
    Keyword.CONFIRM: "confirm",
    Keyword.RESCHEDULE: "reschedule",
}
_CONSENTS: dict[Keyword, Consent] = {Keyword.OPT_OUT: "opt_out", Keyword.OPT_IN: "opt_in"}

# `Y` / `YES` take the time of a waitlist offer. YES is also a carrier opt-in keyword:
# it accepts only when the number's latest message is a waitlist offer and the number
# has not opted out there; otherwise it keeps its START meaning.
ACCEPT_WORDS = frozenset({"Y", "YES"})


@router.post(INBOUND_PATH)
async def twilio_inbound(
    form: SignedInboundForm, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Incoming SMS (signed; no bearer token): STOP opts the number out, START back in;
    C, R and an option number answer the latest message about an appointment sent to
    the number; Y (or YES) takes the waitlist offer that was the latest message."""
    settings = settings_of(runtime)
    try:
        inbound = parse_inbound_message(form)
    except InvalidWebhook as exc:
        raise ProblemError(str(exc)) from exc
    phone = normalize_phone(inbound.from_, default_country_code=settings.default_country_code)
    accepting = inbound.body.strip().upper() in ACCEPT_WORDS
    if phone is None or (inbound.keyword is None and inbound.choice is None and not accepting):
        # Free text is not acted on (secure threads come later); HELP is answered by the
        # provider's own keyword handling. An empty TwiML answer sends nothing back.
        return Response(EMPTY_TWIML, media_type="application/xml")
    await receive_sms_reply(
        runtime,
        session,
        reply_id=inbound.message_sid,
        phone=phone,
        accepting=accepting,
        consent=_CONSENTS.get(inbound.keyword) if inbound.keyword else None,
        intent=_INTENTS.get(inbound.keyword) if inbound.keyword else None,
        choice=inbound.choice,
    )
    return Response(EMPTY_TWIML, media_type="application/xml")
