"""A local stand-in for Twilio's Messages API that speaks the same HTTP.

It accepts ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with Basic auth,
answers with Twilio-shaped JSON and errors, records every accepted message, and can
post signed status callbacks to the ``StatusCallback`` URL a message named. Tell it to
fail the next N requests (429 or 500) to exercise retries.

Serve it with :func:`careloop_kit.testing.apps.serve_in_task` and point
:class:`careloop_messaging.channels.sms.TwilioClient` at the URL it yields.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from careloop_kit.testing.http_auth import basic_auth_matches
from careloop_messaging.channels.sms import SIGNATURE_HEADER, compute_signature


@dataclass
class RecordedMessage:
    sid: str
    account_sid: str
    to: str
    body: str
    from_: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    status: str = "queued"
    form: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


class TwilioDouble:
    """One fake Twilio account. ``app`` is the ASGI app to serve."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[RecordedMessage] = []
        self.requests = 0
        self._failures: list[int] = []
        self.app = Starlette(
            routes=[
                Route(
                    "/2010-04-01/Accounts/{account_sid}/Messages.json",
                    self._create_message,
                    methods=["POST"],
                )
            ]
        )

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer the next ``count`` create requests with ``status`` (429 or 5xx)."""
        self._failures.extend([status] * count)

    def by_sid(self, sid: str) -> RecordedMessage:
        for message in self.messages:
            if message.sid == sid:
                return message
        raise KeyError(sid)

    async def fire_status_callback(
        self, sid: str, status: str, *, error_code: int | None = None
    ) -> httpx.Response:
        """POST a signed status callback for message ``sid``, as Twilio would."""
        message = self.by_sid(sid)
        if message.status_callback is None:
            raise ValueError(f"message {sid} has no StatusCallback")
        message.status = status
        form = {
            "AccountSid": self.account_sid,
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": message.to,
            "ApiVersion": "2010-04-01",
        }
        if message.from_ is not None:
            form["From"] = message.from_
        if message.messaging_service_sid is not None:
            form["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        signature = compute_signature(self.auth_token, message.status_callback, form)
        async with httpx.AsyncClient() as client:
            return await client.post(
                message.status_callback, data=form, headers={SIGNATURE_HEADER: signature}
            )

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return basic_auth_matches(header, self.account_sid, self.auth_token)

    async def _create_message(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self._failures:
            status = self._failures.pop(0)
            if status == 429:
                return _error(429, 20429, "Too Many Requests")
            return _error(status, 20500, "Internal Server Error")
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        if request.path_params["account_sid"] != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        # Parsed by hand: Starlette's form parser needs python-multipart, which the
        # workspace does not install, and Twilio only sends urlencoded forms.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if not form.get("To"):
            return _error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not form.get("Body"):
            return _error(400, 21602, "Message body is required.")
        if not form["To"].startswith("+") or not form["To"][1:].isdigit():
            return _error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
        sid = "SM" + secrets.token_hex(16)
        message = RecordedMessage(
            sid=sid,
            account_sid=self.account_sid,
            to=form["To"],
            body=form["Body"],
            from_=form.get("From"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            status_callback=form.get("StatusCallback"),
            form=form,
        )
        self.messages.append(message)
        return JSONResponse(self._resource(message), status_code=201)

    def _resource(self, message: RecordedMessage) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        return {
            "sid": message.sid,
            "account_sid": message.account_sid,
            "api_version": "2010-04-01",
            "body": message.body,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(message.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "status": message.status,
            "to": message.to,
            "uri": f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}.json",
        }
