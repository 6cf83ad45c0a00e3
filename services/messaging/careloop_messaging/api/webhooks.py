"""Provider webhooks. No bearer token by design: Twilio cannot hold one. Each request is
authenticated instead by its `X-Twilio-Signature` (HMAC-SHA1 under our auth token over
the public URL and the form), checked before anything in the form is trusted."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response

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
from careloop_messaging.domain.outreach import MessageStatus, Recipient, normalize_phone
from careloop_messaging.domain.templates import Channel
from careloop_messaging.handlers.delivery import publish_failed
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import Messages, OptOuts, RecipientCipher

router = APIRouter(tags=["webhooks"])

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Twilio's callbacks may arrive out of order ("sent" after "delivered"): only these
# transitions are applied, so a late callback never moves a message backwards.
_UPDATABLE = {MessageStatus.QUEUED, MessageStatus.SENT}


async def _verified_form(
    request: Request, runtime: RuntimeDep, public_url: str | None
) -> dict[str, str]:
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
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
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    return await _verified_form(request, runtime, settings.twilio_status_callback_url)


async def _signed_inbound_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    return await _verified_form(request, runtime, settings.twilio_inbound_url)


SignedForm = Annotated[dict[str, str], Depends(_signed_form)]
SignedInboundForm = Annotated[dict[str, str], Depends(_signed_inbound_form)]


@router.post(STATUS_PATH, status_code=204)
async def twilio_status(form: SignedForm, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Twilio delivery status callback (signed; no bearer token)."""
    try:
        callback = parse_status_callback(form)
    except InvalidWebhook as exc:
        raise ProblemError(str(exc)) from exc
    messages = Messages(session)
    stored = await messages.by_provider_id(callback.message_sid)
    # An unknown sid is answered 204 too: an error would only make Twilio retry.
    if stored is None or stored.status not in _UPDATABLE:
        return Response(status_code=204)
    now = runtime.clock.now()
    if callback.status in {TwilioStatus.DELIVERED, TwilioStatus.READ}:
        await messages.set_status(stored.id, MessageStatus.DELIVERED, error=None, now=now)
    elif callback.status in {TwilioStatus.UNDELIVERED, TwilioStatus.FAILED}:
        reason = f"Twilio status {callback.status} (code {callback.error_code})"
        await messages.set_status(stored.id, MessageStatus.FAILED, error=reason, now=now)
        await publish_failed(runtime, session, stored, attempts=stored.attempts, reason=reason)
    return Response(status_code=204)


@router.post(INBOUND_PATH)
async def twilio_inbound(
    form: SignedInboundForm, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Incoming SMS (signed; no bearer token): STOP opts the number out, START back in."""
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    try:
        inbound = parse_inbound_message(form)
    except InvalidWebhook as exc:
        raise ProblemError(str(exc)) from exc
    phone = normalize_phone(inbound.from_, default_country_code=settings.default_country_code)
    if phone is not None and inbound.keyword in {Keyword.OPT_OUT, Keyword.OPT_IN}:
        cipher: RecipientCipher = runtime.state["cipher"]
        recipient = Recipient(Channel.SMS, phone)
        # The carrier-level STOP covers our number, whoever sent through it: every
        # organization that messaged this phone stops (or resumes) texting it.
        orgs = await Messages(session).orgs_that_messaged(Channel.SMS, cipher.lookup(recipient))
        opt_outs = OptOuts(session)
        for org_id in sorted(orgs):
            index = cipher.index(org_id, recipient)
            if inbound.keyword is Keyword.OPT_OUT:
                await opt_outs.add(org_id, Channel.SMS, index, runtime.clock.now())
            else:
                await opt_outs.remove(org_id, Channel.SMS, index)
    # Confirmation and reschedule replies (C / R) need scheduling commands that do not
    # exist yet; HELP and STOP replies are Twilio's own (Advanced Opt-Out). An empty
    # TwiML answer sends nothing back.
    return Response(EMPTY_TWIML, media_type="application/xml")
