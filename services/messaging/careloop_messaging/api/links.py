"""Secure one-time links: the page behind the link in a reminder or a reschedule offer.

No bearer token by design: the patient taps a link in a text message. The token in the
path is the credential (message id + HMAC under a key in Vault, see `SecureLinks`); a
malformed, forged or unknown token gets the same 404, so the answer tells nothing about
which messages exist.

- `GET /links/{token}` shows only what the message itself could say (practice display
  name, local date and time, what was already done) and never acts: mail and SMS link
  scanners fetch links before the patient does.
- `POST /links/{token}` acts once: the first action spends the link in the same
  transaction (row locked) as its `reply.received.v2` event and audit record; any later
  POST is answered 409 with what was done.

HTML for browsers (Jinja2 pages in `api/pages/`, autoescaped), JSON with
`Accept: application/json`, errors as problem+json to JSON clients.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import parse_qsl

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.messaging import ReplyReceivedV2
from careloop_kit.audit import AuditEntry, recorder_of, request_meta
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL, CONTACT
from careloop_kit.problems import problem_response
from careloop_kit.service import Runtime, RuntimeDep, SessionDep
from careloop_messaging.domain.outreach import (
    MessageStatus,
    local_date_and_time,
    message_kind,
    shown_options,
    valid_choice,
)
from careloop_messaging.domain.templates import MessageKind
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import Messages, SecureLinks, StoredMessage

LINKS_PATH = "/links"
LINKS_KEY = "links"
MAX_BODY_BYTES = 2048
"""A link action is one word and a digit: anything much larger is not one."""

# The page language: dates and times are formatted as in the English messages.
PAGE_LANGUAGE = "en"

Action = Literal["confirm", "reschedule", "cancel", "choose"]
State = Literal["scheduled", "confirmed", "reschedule_requested", "rescheduled", "cancelled"]

_STATE_AFTER: dict[str, State] = {
    "confirm": "confirmed",
    "reschedule": "reschedule_requested",
    "choose": "rescheduled",
    "cancel": "cancelled",
}
# After these, the appointment is gone: no link about it may act any more.
_CLOSED: frozenset[State] = frozenset({"rescheduled", "cancelled"})
_ACTIONS: dict[MessageKind, tuple[Action, ...]] = {
    MessageKind.CONFIRMATION: ("confirm", "reschedule", "cancel"),
    MessageKind.REMINDER: ("confirm", "reschedule", "cancel"),
    MessageKind.RESCHEDULE_OFFER: ("choose", "cancel"),
}
# Headers of every page: the token in the URL must not leak through a Referer, a cache or
# a search index, and the page runs no script and loads nothing.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

router = APIRouter(prefix=LINKS_PATH, tags=["links"])


class LinkOption(BaseModel):
    choice: int = Field(description="The number to choose it with.")
    date: str = Field(description="Local date of the offered time.")
    time: str = Field(description="Local time of the offered time.")


class LinkDone(BaseModel):
    action: Action = Field(description="What this link was used for.")
    choice: int | None = Field(description="For `choose`: the option taken.")
    at: datetime = Field(description="When (UTC).")


class LinkRead(BaseModel):
    """What a secure link's page shows: only fields an SMS may carry."""

    practice_name: str = Field(
        description="The practice's display name; the neutral sender name for sensitive "
        "(behavioral health) locations."
    )
    appointment_date: str | None = Field(
        description="Local date of the visit (location's zone); None for an offer, which "
        "lists `options` instead."
    )
    appointment_time: str | None = Field(description="Local time of the visit.")
    state: State = Field(description="The appointment's state as far as messaging knows.")
    actions: list[Action] = Field(description="What the link can still do (empty once used).")
    options: list[LinkOption] = Field(description="Offered times (reschedule offers only).")
    done: LinkDone | None = Field(description="What this link did, once used.")
    next_step: str | None = Field(description="What happens next, once used.")


class LinkAction(BaseModel):
    """The body of a POST (form fields or JSON)."""

    action: Action
    choice: int | None = Field(None, ge=1, le=9)


@lru_cache(maxsize=1)
def _pages() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("careloop_messaging.api", "pages"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _settings(runtime: Runtime) -> MessagingSettings:
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    return settings


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "json" in accept and "text/html" not in accept


def _next_step(action: str, choice_label: str | None) -> str:
    """What the patient can expect, in words that hold no PHI."""
    if action == "confirm":
        return "Thank you: your appointment is confirmed."
    if action == "reschedule":
        return (
            "We will send you a few open times shortly, by text message or email. "
            "Your appointment stays booked until you choose a new time."
        )
    if action == "choose":
        return (
            f"You chose {choice_label}. We will send you a confirmation of the new time."
            if choice_label
            else "We will send you a confirmation of the new time."
        )
    return (
        "Your cancellation has been sent to the practice. To book another time, contact "
        "the practice."
    )


def _options(stored: StoredMessage) -> list[LinkOption]:
    options: list[LinkOption] = []
    for number, start in enumerate(shown_options(stored.offer_options or ()), start=1):
        day, time = local_date_and_time(start, stored.time_zone, PAGE_LANGUAGE)
        options.append(LinkOption(choice=number, date=day, time=time))
    return options


def _expires_at(stored: StoredMessage) -> datetime:
    """A reminder's link lapses when the visit starts, an offer's when the offer does."""
    return stored.offer_expires_at or stored.start_at


def _view(
    settings: MessagingSettings,
    stored: StoredMessage,
    latest: tuple[str, int | None, datetime] | None,
) -> LinkRead:
    kind = message_kind(stored.touch)
    options = _options(stored) if kind is MessageKind.RESCHEDULE_OFFER else []
    state: State = _STATE_AFTER.get(latest[0], "scheduled") if latest else "scheduled"
    done: LinkDone | None = None
    next_step: str | None = None
    actions: list[Action] = []
    if stored.link_used_at is not None and stored.link_action is not None:
        action: Action = stored.link_action  # type: ignore[assignment]
        done = LinkDone(action=action, choice=stored.link_choice, at=stored.link_used_at)
        picked = next((o for o in options if o.choice == stored.link_choice), None)
        next_step = _next_step(action, f"{picked.date} at {picked.time}" if picked else None)
    elif state not in _CLOSED:
        actions = list(_ACTIONS[kind])
    day: str | None = None
    time: str | None = None
    # An offer's row holds option 1 as its visit time: not the visit's, so not shown.
    if kind is not MessageKind.RESCHEDULE_OFFER:
        day, time = local_date_and_time(stored.start_at, stored.time_zone, PAGE_LANGUAGE)
    return LinkRead(
        # As in the messages: a behavioral health practice's own name reveals the care.
        practice_name=(
            settings.neutral_sender_name if stored.sensitive_location else stored.practice_name
        ),
        appointment_date=day,
        appointment_time=time,
        state=state,
        actions=actions,
        options=options,
        done=done,
        next_step=next_step,
    )


def _page(
    template: str, status: int, *, view: LinkRead | None = None, detail: str | None = None
) -> HTMLResponse:
    html = (
        _pages()
        .get_template(template)
        .render(view=view, detail=detail, offer=bool(view and view.options))
    )
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def _problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    view: LinkRead | None = None,
) -> Response:
    """problem+json for JSON clients (with the link's state and what it did, if known),
    the error page for browsers. The instance names the route, never the token: problem
    bodies end up in logs."""
    if _wants_json(request):
        extra: dict[str, Any] = {}
        if view is not None:
            extra["state"] = view.state
            extra["done"] = view.done.model_dump(mode="json") if view.done else None
            extra["next_step"] = view.next_step
        response = problem_response(status, title, slug, detail, LINKS_PATH + "/{token}", **extra)
        response.headers.update(_PAGE_HEADERS)
        return response
    return _page("link_problem.html", status, view=view, detail=detail)


def _not_found(request: Request) -> Response:
    return _problem(
        request,
        404,
        "link-not-found",
        "Link not found",
        "This link is not valid. Check that it was copied completely, or contact the practice.",
    )


def _expired(request: Request) -> Response:
    return _problem(
        request,
        410,
        "link-expired",
        "Link expired",
        "This link has expired. To change your appointment, contact the practice.",
    )


def _answer(request: Request, view: LinkRead, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(view.model_dump(mode="json"), status_code=status, headers=_PAGE_HEADERS)
    return _page("link.html", status, view=view)


async def _message(
    runtime: Runtime, session: AsyncSession, token: str, *, lock: bool
) -> StoredMessage | None:
    """The message a token opens, or None (malformed, forged, unknown, or never sent)."""
    links: SecureLinks = runtime.state[LINKS_KEY]
    message_id = links.message_id(token)
    if message_id is None:
        return None
    messages = Messages(session)
    stored = await (messages.get_for_update(message_id) if lock else messages.get(message_id))
    if stored is None or stored.appointment_id is None or stored.status is MessageStatus.SKIPPED:
        return None
    return stored


async def _audit(
    runtime: Runtime,
    session: AsyncSession,
    request: Request,
    stored: StoredMessage,
    *,
    action: str,
    resource_id: str,
    detail: str,
    phi: str,
) -> None:
    """The link's holder is taken to be the patient it was sent to: audited as the patient,
    like a keyword reply (`api/webhooks.py`)."""
    who = Principal(actor_id=stored.patient_id, actor_type="patient", org_id=stored.org_id)
    entry = AuditEntry(
        action=action,
        resource_type="Communication",
        phi_categories=[phi],
        patient_id=stored.patient_id,
        resource_id=resource_id,
    )
    await recorder_of(runtime).record(
        session, who, entry, outcome_detail=detail, **request_meta(request)
    )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": LinkRead, "content": {"text/html": {}}},
    404: {"description": "Unknown, forged or malformed token (problem+json or page)"},
    410: {"description": "The visit has started or the offer lapsed (problem+json or page)"},
}


@router.get("/{token}", responses=_RESPONSES)
async def read_link(
    token: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """A secure link's page: the visit and what the link can do (public; never acts)."""
    stored = await _message(runtime, session, token, lock=False)
    if stored is None:
        return _not_found(request)
    if runtime.clock.now() >= _expires_at(stored):
        return _expired(request)
    assert stored.appointment_id is not None
    latest = await Messages(session).latest_link_action(stored.org_id, stored.appointment_id)
    view = _view(_settings(runtime), stored, latest)
    await _audit(
        runtime,
        session,
        request,
        stored,
        action="read",
        resource_id=stored.id,
        detail="secure link page viewed",
        phi=CLINICAL,
    )
    return _answer(request, view)


class _BadBody(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def _read_action(request: Request) -> LinkAction:
    """The posted action, from a form or JSON; bounded before it is parsed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BadBody(413, f"The body exceeds {MAX_BODY_BYTES} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BadBody(413, f"The body exceeds {MAX_BODY_BYTES} bytes.")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media == "application/json":
            fields: Any = json.loads(body)
        elif media in ("application/x-www-form-urlencoded", ""):
            # Parsed by hand: the workspace does not install python-multipart.
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            if fields.get("choice") == "":
                fields.pop("choice")
        else:
            raise _BadBody(415, "Send the action as a form or as JSON.")
        return LinkAction.model_validate(fields)
    except (ValueError, UnicodeDecodeError) as exc:
        # pydantic's ValidationError is a ValueError.
        raise _BadBody(
            422,
            "Send `action` (confirm, reschedule, cancel or choose) and, "
            "for choose, `choice` (an offered option's number).",
        ) from exc


@router.post(
    "/{token}",
    responses={
        **_RESPONSES,
        409: {"description": "The link was already used (what was done is in `done`)"},
        413: {"description": "Body too large"},
        422: {"description": "Unknown action, or an option that was not offered"},
    },
)
async def act_on_link(
    token: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Act on a secure link once: confirm, ask for other times, cancel, or choose an
    offered time (public; the token is the credential)."""
    stored = await _message(runtime, session, token, lock=True)
    if stored is None:
        return _not_found(request)
    assert stored.appointment_id is not None
    messages = Messages(session)
    now = runtime.clock.now()
    latest = await messages.latest_link_action(stored.org_id, stored.appointment_id)
    if stored.link_used_at is not None:
        view = _view(_settings(runtime), stored, latest)
        return _problem(
            request,
            409,
            "link-used",
            "Link already used",
            "This link was already used; it works once.",
            view=view,
        )
    if now >= _expires_at(stored):
        return _expired(request)
    try:
        posted = await _read_action(request)
    except _BadBody as bad:
        return _problem(request, bad.status, "invalid-link-action", "Invalid request", bad.detail)
    view = _view(_settings(runtime), stored, latest)
    if not view.actions:
        # Another link about the same appointment cancelled or moved it.
        return _problem(
            request,
            409,
            "appointment-closed",
            "Appointment already changed",
            "This appointment was already cancelled or moved to another time.",
            view=view,
        )
    if posted.action not in view.actions or (
        posted.action == "choose"
        and (posted.choice is None or not valid_choice(posted.choice, stored.offer_options or ()))
    ):
        return _problem(
            request,
            422,
            "invalid-link-action",
            "Invalid request",
            f"This link can: {', '.join(view.actions)}"
            + ("; choose takes the number of an offered time." if view.options else "."),
        )
    choice = posted.choice if posted.action == "choose" else None
    reply_id = str(uuid.uuid4())
    await messages.use_link(stored.id, action=posted.action, choice=choice, now=now)
    await runtime.outbox.add(
        session,
        ReplyReceivedV2(
            reply_id=reply_id,
            org_id=stored.org_id,
            patient_id=stored.patient_id,
            message_id=stored.id,
            appointment_id=stored.appointment_id,
            intent=posted.action,
            choice=choice,
            via="link",
            received_at=now,
        ),
        org_id=stored.org_id,
        location_id=stored.location_id,
    )
    await _audit(
        runtime,
        session,
        request,
        stored,
        action="create",
        resource_id=reply_id,
        detail=f"{posted.action} by secure link",
        phi=CONTACT,
    )
    used = replace(stored, link_used_at=now, link_action=posted.action, link_choice=choice)
    return _answer(request, _view(_settings(runtime), used, (posted.action, choice, now)))
