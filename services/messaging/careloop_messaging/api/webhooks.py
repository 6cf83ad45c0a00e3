"""Provider webhooks. No bearer token by design: Twilio cannot hold one. Each request is
authenticated instead by its `X-Twilio-Signature` (HMAC-SHA1 under our auth token over
the public URL and the form), checked before anything in the form is trusted."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.messaging import ReplyIntentV2
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.problems import Forbidden, ProblemError
from careloop_kit.service import Runtime, RuntimeDep, SessionDep
from careloop_messaging.api.replies import publish_reply
from careloop_messaging.channels.sms import (
    SIGNATURE_HEADER,
    InvalidWebhook,
    Keyword,
    parse_inbound_message,
    parse_status_callback,
    verify_signature,
)
from careloop_messaging.channels.sms import MessageStatus as TwilioStatus
from careloop_messaging.domain.outreach import (
    MessageStatus,
    Recipient,
    message_kind,
    normalize_phone,
    valid_choice,
)
from careloop_messaging.domain.templates import Channel, MessageKind
from careloop_messaging.handlers.delivery import publish_failed
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import (
    Messages,
    OptOuts,
    RecipientCipher,
    StoredMessage,
)

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


_INTENTS: dict[Keyword, ReplyIntentV2] = {
    Keyword.CONFIRM: "confirm",
    Keyword.RESCHEDULE: "reschedule",
}

# `Y` / `YES` take the time of a waitlist offer. YES is also a carrier opt-in keyword:
# it accepts only when the number's latest message is a waitlist offer and the number
# has not opted out there; otherwise it keeps its START meaning.
ACCEPT_WORDS = frozenset({"Y", "YES"})


async def _audit_reply(
    runtime: Runtime,
    session: AsyncSession,
    org_id: str,
    patient_id: str | None,
    resource_type: str,
    reply_id: str,
) -> None:
    """A patient's keyword reply is a disclosure by the patient (a reply to a reminder,
    or a change of consent to be texted): audited with the patient as the actor when
    known, in the reply's own transaction."""
    who = Principal(
        actor_id=patient_id or "sms-sender",
        actor_type="patient" if patient_id else "system",
        org_id=org_id,
    )
    entry = AuditEntry(
        action="create" if resource_type == "Communication" else "update",
        resource_type=resource_type,
        phi_categories=["contact"],
        patient_id=patient_id,
        resource_id=reply_id,
    )
    await recorder_of(runtime).record(session, who, entry)


@router.post(INBOUND_PATH)
async def twilio_inbound(
    form: SignedInboundForm, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Incoming SMS (signed; no bearer token): STOP opts the number out, START back in;
    C, R and an option number answer the latest message about an appointment sent to
    the number; Y (or YES) takes the waitlist offer that was the latest message."""
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
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
    cipher: RecipientCipher = runtime.state["cipher"]
    recipient = Recipient(Channel.SMS, phone)
    lookup = cipher.lookup(recipient)
    messages = Messages(session)
    now = runtime.clock.now()
    if accepting:
        offer = await _waitlist_offer_answered(session, cipher, messages, recipient, lookup)
        if offer is not None:
            await _publish_reply(runtime, session, offer, inbound.message_sid, "accept", None, now)
            return Response(EMPTY_TWIML, media_type="application/xml")
    if inbound.keyword in {Keyword.OPT_OUT, Keyword.OPT_IN}:
        # The carrier-level STOP covers our number, whoever sent through it: every
        # organization that messaged this phone stops (or resumes) texting it.
        opt_outs = OptOuts(session)
        for org_id in sorted(await messages.orgs_that_messaged(Channel.SMS, lookup)):
            index = cipher.index(org_id, recipient)
            if inbound.keyword is Keyword.OPT_OUT:
                await opt_outs.add(org_id, Channel.SMS, index, now)
            else:
                await opt_outs.remove(org_id, Channel.SMS, index)
            await _audit_reply(runtime, session, org_id, None, "Consent", inbound.message_sid)
        return Response(EMPTY_TWIML, media_type="application/xml")
    answered = await messages.latest_answerable(Channel.SMS, lookup)
    if answered is None or answered.appointment_id is None:
        return Response(EMPTY_TWIML, media_type="application/xml")
    intent: ReplyIntentV2 | None = None
    choice: int | None = None
    if inbound.keyword in _INTENTS:
        intent = _INTENTS[inbound.keyword]
    elif inbound.choice is not None and _picks_an_option(answered, inbound.choice):
        intent, choice = "choose", inbound.choice
    if intent is not None:
        await _publish_reply(runtime, session, answered, inbound.message_sid, intent, choice, now)
    return Response(EMPTY_TWIML, media_type="application/xml")


async def _publish_reply(
    runtime: Runtime,
    session: AsyncSession,
    answered: StoredMessage,
    reply_id: str,
    intent: ReplyIntentV2,
    choice: int | None,
    now: datetime,
) -> None:
    """`reply.received.v2` for the answered message, audited in the same transaction."""
    await publish_reply(
        runtime,
        session,
        answered,
        reply_id=reply_id,
        intent=intent,
        choice=choice,
        via="sms",
        now=now,
    )
    await _audit_reply(
        runtime, session, answered.org_id, answered.patient_id, "Communication", reply_id
    )


async def _waitlist_offer_answered(
    session: AsyncSession,
    cipher: RecipientCipher,
    messages: Messages,
    recipient: Recipient,
    lookup: str,
) -> StoredMessage | None:
    """The waitlist offer a Y / YES answers: the number's latest message, if it is one
    and the number has not opted out of texts from its organization (then YES means
    START). An expired offer is still answered: scheduling owns the offer and tells the
    patient the time is gone."""
    latest = await messages.latest_sent(Channel.SMS, lookup)
    if latest is None or message_kind(latest.touch) is not MessageKind.WAITLIST_OFFER:
        return None
    index = cipher.index(latest.org_id, recipient)
    if await OptOuts(session).indexes(latest.org_id, Channel.SMS, [index]):
        return None
    return latest


def _picks_an_option(answered: StoredMessage, choice: int) -> bool:
    """A number answers only a reschedule offer, and only one of the options it listed;
    after anything else it is free text ("2" after a reminder means nothing to us).
    An expired offer's choice is still passed on: scheduling owns the offer and its
    expiry, and refuses it there."""
    if message_kind(answered.touch) is not MessageKind.RESCHEDULE_OFFER:
        return False
    return valid_choice(choice, answered.offer_options or ())
