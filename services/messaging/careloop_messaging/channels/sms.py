"""SMS through Twilio's Programmable Messaging REST API, and Twilio's webhooks.

Outbound: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with form fields
``To``, ``From`` or ``MessagingServiceSid``, ``Body``, ``StatusCallback`` and HTTP Basic
auth (AccountSid:AuthToken). 429 and 5xx are worth retrying; other 4xx are not.

Inbound (status callbacks and incoming messages): Twilio signs each request with
``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, full URL + the POST parameters
sorted by name, each as name + value)). Verify before trusting anything in the form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from opentelemetry.metrics import Meter

from careloop_messaging.channels import SentCounter
from careloop_messaging.domain.channels import DeliveryResult, DeliveryStatus, OutboundMessage
from careloop_messaging.domain.templates import Channel

TWILIO_API_BASE = "https://api.twilio.com"
SIGNATURE_HEADER = "X-Twilio-Signature"

FormParams = Mapping[str, str] | Iterable[tuple[str, str]]


class TwilioError(Exception):
    """Twilio refused or failed a request. ``retryable`` says whether to try again."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def summary(self) -> str:
        """Status and Twilio error code only: Twilio's text can quote the phone number,
        and delivery records must not collect identifiers."""
        parts = [f"HTTP {self.http_status}" if self.http_status else "no HTTP response"]
        if self.code is not None:
            parts.append(f"code {self.code}")
        return "Twilio " + ", ".join(parts)


class TwilioRetryableError(TwilioError):
    """429, 5xx or a network failure: the same request may succeed later."""

    retryable = True


class TwilioPermanentError(TwilioError):
    """A 4xx other than 429: bad number, bad credentials, bad request. Do not retry."""


class InvalidWebhook(ValueError):
    """A Twilio webhook form is missing a field or has an unknown value."""


@dataclass(frozen=True)
class TwilioMessage:
    """The parts of Twilio's Message resource we use."""

    sid: str
    status: str
    error_code: int | None = None
    error_message: str | None = None


class TwilioClient:
    """Creates messages. The ``httpx.AsyncClient`` is owned by the caller (the lifespan)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = TWILIO_API_BASE,
    ) -> None:
        self._http = http
        self._account_sid = account_sid
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"

    async def create_message(
        self,
        *,
        to: str,
        body: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> TwilioMessage:
        """Send one SMS; raises :class:`TwilioRetryableError` or :class:`TwilioPermanentError`."""
        if (from_ is None) == (messaging_service_sid is None):
            raise ValueError("give exactly one of from_ and messaging_service_sid")
        form = {"To": to, "Body": body}
        if from_ is not None:
            form["From"] = from_
        if messaging_service_sid is not None:
            form["MessagingServiceSid"] = messaging_service_sid
        if status_callback is not None:
            form["StatusCallback"] = status_callback
        try:
            response = await self._http.post(self._url, data=form, auth=self._auth)
        except httpx.TransportError as exc:
            raise TwilioRetryableError(f"Twilio unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        payload = _json_object(response)
        sid = payload.get("sid")
        if not isinstance(sid, str):
            raise TwilioRetryableError(
                "Twilio answered without a message sid", http_status=response.status_code
            )
        return TwilioMessage(
            sid=sid,
            status=str(payload.get("status", "")),
            error_code=_int_or_none(payload.get("error_code")),
            error_message=_str_or_none(payload.get("error_message")),
        )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_from(response: httpx.Response) -> TwilioError:
    # Twilio's error body: {"code": 21211, "message": "...", "more_info": "...", "status": 400}
    payload = _json_object(response)
    code = _int_or_none(payload.get("code"))
    text = _str_or_none(payload.get("message")) or response.reason_phrase
    message = f"Twilio HTTP {response.status_code}" + (f" (code {code})" if code else "")
    message += f": {text}"
    status = response.status_code
    if status == 429 or status >= 500:
        return TwilioRetryableError(
            message, http_status=status, code=code, retry_after_s=_retry_after(response)
        )
    return TwilioPermanentError(message, http_status=status, code=code)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: let the caller's backoff decide


def _int_or_none(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class TwilioSmsChannel:
    """:class:`~careloop_messaging.domain.channels.OutboundChannel` for SMS via Twilio."""

    channel = Channel.SMS

    def __init__(
        self,
        client: TwilioClient,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback_url: str | None = None,
        meter: Meter | None = None,
    ) -> None:
        if (from_number is None) == (messaging_service_sid is None):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        self._sent = SentCounter(Channel.SMS, meter)
        self._client = client
        self._from = from_number
        self._service = messaging_service_sid
        self._callback = status_callback_url

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        if message.channel is not Channel.SMS:
            raise ValueError(f"TwilioSmsChannel cannot send a {message.channel} message")
        return self._sent.count(await self._send(message))

    async def _send(self, message: OutboundMessage) -> DeliveryResult:
        try:
            created = await self._client.create_message(
                to=message.to,
                body=message.body,
                from_=self._from,
                messaging_service_sid=self._service,
                status_callback=self._callback,
            )
        except TwilioError as exc:
            return DeliveryResult(DeliveryStatus.FAILED, retryable=exc.retryable, error=exc.summary)
        if created.status in {"failed", "undelivered"}:
            return DeliveryResult(
                DeliveryStatus.FAILED,
                provider_id=created.sid,
                error=f"Twilio status {created.status} (code {created.error_code})",
            )
        return DeliveryResult(DeliveryStatus.QUEUED, provider_id=created.sid)


# --- webhook signatures -------------------------------------------------------------


def _pairs(params: FormParams) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]


def compute_signature(auth_token: str, url: str, params: FormParams) -> str:
    """Twilio's ``X-Twilio-Signature`` for a form POST to ``url``.

    Parameters are sorted by name, then value; a repeated name with the same value
    counts once, as Twilio's own helper libraries do.
    """
    data = url + "".join(name + value for name, value in sorted(set(_pairs(params))))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(auth_token: str, url: str, params: FormParams, signature: str | None) -> bool:
    """True when ``signature`` is Twilio's signature of this request (constant-time compare).

    ``url`` must be the URL exactly as Twilio called it (scheme, host, path and query),
    which behind a proxy means the public URL, not the one the app sees.
    """
    if not signature:
        return False
    expected = compute_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())


# --- status callbacks -------------------------------------------------------------


class MessageStatus(StrEnum):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELED = "canceled"
    READ = "read"

    @property
    def final(self) -> bool:
        return self in {
            MessageStatus.DELIVERED,
            MessageStatus.UNDELIVERED,
            MessageStatus.FAILED,
            MessageStatus.CANCELED,
            MessageStatus.READ,
        }


@dataclass(frozen=True)
class StatusCallback:
    message_sid: str
    status: MessageStatus
    error_code: int | None = None


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise InvalidWebhook(f"Twilio webhook without {name}")
    return value


def parse_status_callback(form: Mapping[str, str]) -> StatusCallback:
    """Read a status callback form (verify its signature first)."""
    sid = _required(form, "MessageSid")
    raw_status = _required(form, "MessageStatus")
    try:
        status = MessageStatus(raw_status)
    except ValueError:
        raise InvalidWebhook(f"unknown MessageStatus {raw_status!r}") from None
    return StatusCallback(sid, status, _int_or_none(form.get("ErrorCode") or None))


# --- inbound messages -------------------------------------------------------------


class Keyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    CONFIRM = "confirm"
    RESCHEDULE = "reschedule"


KEYWORDS: dict[str, Keyword] = {
    **dict.fromkeys(["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"], Keyword.OPT_OUT),
    **dict.fromkeys(["START", "YES", "UNSTOP"], Keyword.OPT_IN),
    **dict.fromkeys(["HELP", "INFO"], Keyword.HELP),
    **dict.fromkeys(["C", "CONFIRM"], Keyword.CONFIRM),
    **dict.fromkeys(["R", "RESCHEDULE"], Keyword.RESCHEDULE),
}
"""Twilio's default opt-out, opt-in and help keywords, plus our reply codes."""


def classify_keyword(body: str) -> Keyword | None:
    """The keyword a whole reply is, ignoring case and surrounding whitespace; else None.

    Only a message that is exactly a keyword counts: "please don't cancel" is free text,
    not an opt-out.
    """
    return KEYWORDS.get(body.strip().upper())


_CHOICE_DIGITS = "123456789"


def classify_choice(body: str) -> int | None:
    """The option number a whole reply is (exactly one digit 1-9, surrounding whitespace
    ignored); else None. "2 please" or "12" are free text, like any other chatter."""
    stripped = body.strip()
    # Compared with ASCII digits on purpose: str.isdigit() also accepts "²" or "٢".
    if len(stripped) == 1 and stripped in _CHOICE_DIGITS:
        return int(stripped)
    return None


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    from_: str
    to: str
    body: str
    keyword: Keyword | None
    choice: int | None = None
    """The option number, when the reply is exactly one digit (answers an offer)."""


def parse_inbound_message(form: Mapping[str, str]) -> InboundMessage:
    """Read an incoming-message webhook form (verify its signature first)."""
    body = form.get("Body", "")
    return InboundMessage(
        message_sid=_required(form, "MessageSid"),
        from_=_required(form, "From"),
        to=_required(form, "To"),
        body=body,
        keyword=classify_keyword(body),
        choice=classify_choice(body),
    )
