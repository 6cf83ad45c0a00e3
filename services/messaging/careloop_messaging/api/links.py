"""Secure one-time links: the page behind the link in a reminder, a reschedule offer, a
waitlist message or a referral waiting to be booked.

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
- A waitlist offer's link takes the offered time (`accept`, the same answer as a `Y`
  text, with the offer id); scheduling decides whether it is still free. The "that time
  is gone" message's link only says so. Neither row names an appointment.
- A referral contact's link says a referral is ready to be booked and offers a call back
  (`call_me`, a `callback.requested` event that puts a call on the location's worklist);
  it names nothing about the referral.
- A check-up's link (care-gap outreach) says a check-up is due and to call the practice
  to book; it takes no action. A call back would need a `callback.requested` naming a
  care-gap subject, and that event's v1 knows only referrals: it comes with a v2.

HTML for browsers (Jinja2 pages in `api/pages/`, autoescaped), JSON with
`Accept: application/json`, errors as problem+json to JSON clients.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.audit import request_meta
from careloop_kit.problems import problem_response
from careloop_kit.service import RuntimeDep, SessionDep
from careloop_messaging.domain.outreach import (
    local_date_and_time,
    message_kind,
    shown_options,
    valid_choice,
)
from careloop_messaging.domain.templates import MessageKind
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import StoredMessage
from careloop_messaging.usecases.context import settings_of
from careloop_messaging.usecases.links import (
    WAITLIST_KINDS,
    link_expires_at,
    link_history,
    open_link,
    record_link_viewed,
    use_link,
)

LINKS_PATH = "/links"
MAX_BODY_BYTES = 2048
"""A link action is one word and a digit: anything much larger is not one."""

# The page language: dates and times are formatted as in the English messages.
PAGE_LANGUAGE = "en"

Action = Literal["confirm", "reschedule", "cancel", "choose", "accept", "call_me"]
State = Literal[
    "scheduled",
    "confirmed",
    "reschedule_requested",
    "rescheduled",
    "cancelled",
    "offered",
    "accept_requested",
    "unavailable",
    "ready_to_book",
    "callback_requested",
]
# `ready_to_book` is also a check-up's only state: its link takes no action.
LinkKind = Literal[
    "appointment", "reschedule_offer", "waitlist_offer", "waitlist_closed", "referral", "checkup"
]

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
    MessageKind.WAITLIST_OFFER: ("accept",),
    MessageKind.WAITLIST_CLOSED: (),
    MessageKind.REFERRAL_CONTACT: ("call_me",),
    MessageKind.CHECKUP: (),
}
_LINK_KINDS: dict[MessageKind, LinkKind] = {
    MessageKind.CONFIRMATION: "appointment",
    MessageKind.REMINDER: "appointment",
    MessageKind.RESCHEDULE_OFFER: "reschedule_offer",
    MessageKind.WAITLIST_OFFER: "waitlist_offer",
    MessageKind.WAITLIST_CLOSED: "waitlist_closed",
    MessageKind.REFERRAL_CONTACT: "referral",
    MessageKind.CHECKUP: "checkup",
}
# The same words whoever took the time (another patient, the practice) or whatever closed
# the offer: the page tells this patient only that the time is gone, as the "gone" text does.
_UNAVAILABLE = (
    "This time is no longer available. You are still on our waitlist: we will let you "
    "know when another time opens up."
)
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

    kind: LinkKind = Field(
        description="What the message was: about an appointment (confirmation, reminder), "
        "a reschedule offer, a waitlist offer, the notice that a waitlist offer's time "
        "is gone, a referral waiting to be booked, or a check-up that is due."
    )
    practice_name: str = Field(
        description="The practice's display name; the neutral sender name for sensitive "
        "(behavioral health) locations."
    )
    appointment_date: str | None = Field(
        description="Local date of the visit (location's zone), or of the time a waitlist "
        "message is about; None for a reschedule offer, which lists `options` instead, "
        "and for a referral or a check-up, which have no visit yet."
    )
    appointment_time: str | None = Field(description="Local time of the visit.")
    offer_expires_date: str | None = Field(
        None, description="Waitlist offers: the local date until which the time can be taken."
    )
    offer_expires_time: str | None = Field(
        None, description="Waitlist offers: the local time until which the time can be taken."
    )
    state: State = Field(
        description="As far as messaging knows: the appointment's state; for a waitlist "
        "message `offered`, `accept_requested` (taken through this link, scheduling "
        "confirms by message) or `unavailable` (the time is gone, whatever the reason); "
        "for a referral `ready_to_book` or `callback_requested`; for a check-up "
        "`ready_to_book`."
    )
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
    if action == "call_me":
        return (
            "Thank you: someone from the practice will call you to find a time. You can "
            "also call us whenever suits you."
        )
    if action == "accept":
        return (
            "Thank you: we received your answer. If the time is still free, it is booked "
            "for you and a confirmation text will follow shortly. If another patient "
            "answered first, we will let you know, and you stay on our waitlist."
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


def _practice_name(settings: MessagingSettings, stored: StoredMessage) -> str:
    # As in the messages: a behavioral health practice's own name reveals the care.
    return settings.neutral_sender_name if stored.sensitive_location else stored.practice_name


class _Progress(NamedTuple):
    """Where the link stands: the state shown, what it can still do, what it did."""

    state: State
    actions: list[Action]
    done: LinkDone | None = None
    next_step: str | None = None


def _waitlist_progress(stored: StoredMessage, kind: MessageKind, *, closed: bool) -> _Progress:
    """A waitlist message's: while the offer is open and the link unused, the one action
    that takes the offered time."""
    progress = _Progress("offered", [])
    if stored.link_used_at is not None and stored.link_action is not None:
        action: Action = stored.link_action  # type: ignore[assignment]
        done = LinkDone(action=action, choice=None, at=stored.link_used_at)
        progress = _Progress("accept_requested", [], done, _next_step(action, None))
    elif not closed and kind is MessageKind.WAITLIST_OFFER:
        progress = _Progress("offered", list(_ACTIONS[kind]))
    if closed or kind is MessageKind.WAITLIST_CLOSED:
        # Answered through this link, then closed (too late): the promise of a
        # confirmation no longer holds.
        next_step = _UNAVAILABLE if progress.done is not None else None
        progress = progress._replace(state="unavailable", next_step=next_step)
    return progress


def _referral_progress(stored: StoredMessage) -> _Progress:
    """A referral contact's: ready to book until the patient asks for a call."""
    if stored.link_used_at is not None and stored.link_action is not None:
        action: Action = stored.link_action  # type: ignore[assignment]
        done = LinkDone(action=action, choice=None, at=stored.link_used_at)
        return _Progress("callback_requested", [], done, _next_step(action, None))
    return _Progress("ready_to_book", list(_ACTIONS[MessageKind.REFERRAL_CONTACT]))


def _checkup_progress() -> _Progress:
    """A check-up's: always ready to book, by phone (the link takes no action)."""
    return _Progress("ready_to_book", [])


def _appointment_progress(
    stored: StoredMessage,
    kind: MessageKind,
    latest: tuple[str, int | None, datetime] | None,
    options: list[LinkOption],
) -> _Progress:
    """A message about an appointment's: its state as the last link action about it left
    it, and the actions its kind offers until one is taken."""
    state: State = _STATE_AFTER.get(latest[0], "scheduled") if latest else "scheduled"
    if stored.link_used_at is not None and stored.link_action is not None:
        action: Action = stored.link_action  # type: ignore[assignment]
        done = LinkDone(action=action, choice=stored.link_choice, at=stored.link_used_at)
        picked = next((o for o in options if o.choice == stored.link_choice), None)
        next_step = _next_step(action, f"{picked.date} at {picked.time}" if picked else None)
        return _Progress(state, [], done, next_step)
    return _Progress(state, [] if state in _CLOSED else list(_ACTIONS[kind]))


def _view(
    settings: MessagingSettings,
    stored: StoredMessage,
    latest: tuple[str, int | None, datetime] | None,
    *,
    closed: bool = False,
) -> LinkRead:
    """What the page shows. `latest`: the last link action about the message's appointment;
    `closed`: a waitlist offer is known to be gone."""
    kind = message_kind(stored.touch)
    options = _options(stored) if kind is MessageKind.RESCHEDULE_OFFER else []
    if kind in WAITLIST_KINDS:
        progress = _waitlist_progress(stored, kind, closed=closed)
    elif kind is MessageKind.REFERRAL_CONTACT:
        progress = _referral_progress(stored)
    elif kind is MessageKind.CHECKUP:
        progress = _checkup_progress()
    else:
        progress = _appointment_progress(stored, kind, latest, options)
    day: str | None = None
    time: str | None = None
    # An offer's row holds option 1 as its visit time, a referral's and a check-up's the
    # link's lapse: none is a visit's, so none is shown as one.
    if kind not in (
        MessageKind.RESCHEDULE_OFFER,
        MessageKind.REFERRAL_CONTACT,
        MessageKind.CHECKUP,
    ):
        day, time = local_date_and_time(stored.start_at, stored.time_zone, PAGE_LANGUAGE)
    expires_day: str | None = None
    expires_time: str | None = None
    if kind is MessageKind.WAITLIST_OFFER:
        expires_day, expires_time = local_date_and_time(
            link_expires_at(stored), stored.time_zone, PAGE_LANGUAGE
        )
    return LinkRead(
        kind=_LINK_KINDS[kind],
        practice_name=_practice_name(settings, stored),
        appointment_date=day,
        appointment_time=time,
        offer_expires_date=expires_day,
        offer_expires_time=expires_time,
        options=options,
        **progress._asdict(),
    )


def _page(
    template: str, status: int, *, view: LinkRead | None = None, detail: str | None = None
) -> HTMLResponse:
    html = (
        _pages()
        .get_template(template)
        .render(
            view=view,
            detail=detail,
            offer=bool(view and view.options),
            waitlist=bool(view and view.kind in ("waitlist_offer", "waitlist_closed")),
            referral=bool(view and view.kind == "referral"),
            checkup=bool(view and view.kind == "checkup"),
            unavailable=_UNAVAILABLE,
        )
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


def _expired(request: Request, stored: StoredMessage) -> Response:
    kind = message_kind(stored.touch)
    if kind in WAITLIST_KINDS:
        detail = "This link has expired: the offered time can no longer be taken here."
    elif kind is MessageKind.REFERRAL_CONTACT:
        detail = "This link has expired. To book your visit, call the practice."
    elif kind is MessageKind.CHECKUP:
        detail = "This link has expired. To book your check-up, call the practice."
    else:
        detail = "This link has expired. To change your appointment, contact the practice."
    return _problem(request, 410, "link-expired", "Link expired", detail)


def _answer(request: Request, view: LinkRead, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(view.model_dump(mode="json"), status_code=status, headers=_PAGE_HEADERS)
    return _page("link.html", status, view=view)


async def _current_view(
    settings: MessagingSettings, session: AsyncSession, stored: StoredMessage
) -> LinkRead:
    """The page as messaging knows it now."""
    history = await link_history(session, stored)
    return _view(settings, stored, history.latest, closed=history.closed)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": LinkRead, "content": {"text/html": {}}},
    404: {"description": "Unknown, forged or malformed token (problem+json or page)"},
    410: {
        "description": "The visit (or the offered time) has started or the offer lapsed "
        "(problem+json or page)"
    },
}


@router.get("/{token}", responses=_RESPONSES)
async def read_link(
    token: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """A secure link's page: the visit or offered time and what the link can do (public;
    never acts)."""
    stored = await open_link(runtime, session, token, lock=False)
    if stored is None:
        return _not_found(request)
    if runtime.clock.now() >= link_expires_at(stored):
        return _expired(request, stored)
    view = await _current_view(settings_of(runtime), session, stored)
    await record_link_viewed(runtime, session, stored, meta=request_meta(request))
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
            "Send `action` (confirm, reschedule, cancel, choose, accept or call_me) and, "
            "for choose, `choice` (an offered option's number).",
        ) from exc


@router.post(
    "/{token}",
    responses={
        **_RESPONSES,
        409: {
            "description": "The link was already used (what was done is in `done`), the "
            "appointment was already cancelled or moved, or the offered time is gone"
        },
        413: {"description": "Body too large"},
        422: {"description": "Unknown action, or an option that was not offered"},
    },
)
async def act_on_link(
    token: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Act on a secure link once: confirm, ask for other times, cancel, choose an offered
    time, take a waitlist offer's time, or ask for a call about a referral (public; the
    token is the credential)."""
    stored = await open_link(runtime, session, token, lock=True)
    if stored is None:
        return _not_found(request)
    now = runtime.clock.now()
    settings = settings_of(runtime)
    view = await _current_view(settings, session, stored)
    if stored.link_used_at is not None:
        return _problem(
            request,
            409,
            "link-used",
            "Link already used",
            "This link was already used; it works once.",
            view=view,
        )
    if now >= link_expires_at(stored):
        return _expired(request, stored)
    try:
        posted = await _read_action(request)
    except _BadBody as bad:
        return _problem(request, bad.status, "invalid-link-action", "Invalid request", bad.detail)
    if not _ACTIONS[message_kind(stored.touch)] and view.state != "unavailable":
        # A check-up's link only tells the patient to call: there is nothing to do here.
        return _problem(
            request,
            422,
            "invalid-link-action",
            "Invalid request",
            "This link takes no action: to book, call the practice.",
        )
    if view.state == "unavailable":
        return _problem(
            request, 409, "offer-closed", "Time no longer available", _UNAVAILABLE, view=view
        )
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
    now = await use_link(
        runtime, session, stored, action=posted.action, choice=choice, meta=request_meta(request)
    )
    used = replace(stored, link_used_at=now, link_action=posted.action, link_choice=choice)
    return _answer(request, _view(settings, used, (posted.action, choice, now)))
