"""Outcome reports by fax through Phaxio's REST API (v2.1).

``POST {base}/faxes`` as multipart/form-data with ``to`` (the number in E.164 form),
``file`` (the report as a PDF page) and ``header_text``, HTTP Basic auth with the API key
and secret. Phaxio answers ``{"success": true, "message": "Fax queued for sending",
"data": {"id": 1234}}``; an accepted report is one Phaxio queued, as an accepted email
is one the relay took. 429, 5xx and network failures are worth another attempt; any
other 4xx is not (bad credentials, a number Phaxio will not dial).

Phaxio's error text can quote the number, so a delivery's error names the HTTP status
and what to check, never the provider's words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from careloop_kit.vault import VaultUnavailable
from careloop_referrals.channels.pdf import text_pdf
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import Delivery, Recipient, RenderedReport

PHAXIO_API_BASE = "https://api.phaxio.com/v2.1"

SecretSource = Callable[[], Awaitable[Mapping[str, Any]]]


class FaxError(Exception):
    """Phaxio refused or failed the request; `retryable` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class FaxCredentials:
    api_key: str
    api_secret: str


class PhaxioClient:
    """Sends faxes with one account's credentials."""

    def __init__(self, base_url: str, credentials: FaxCredentials, *, timeout_s: float) -> None:
        self._url = f"{base_url.rstrip('/')}/faxes"
        self._auth = httpx.BasicAuth(credentials.api_key, credentials.api_secret)
        self._timeout = timeout_s

    async def send_fax(
        self,
        *,
        to: str,
        pdf: bytes,
        filename: str,
        header_text: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Queue one fax; its Phaxio id, or `FaxError`."""
        form = {"to": to}
        if header_text:
            form["header_text"] = header_text
        for name, value in (tags or {}).items():
            form[f"tags[{name}]"] = value
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.post(
                    self._url,
                    data=form,
                    files={"file": (filename, pdf, "application/pdf")},
                    auth=self._auth,
                )
        except httpx.TransportError as exc:
            raise FaxError(f"fax API unreachable: {type(exc).__name__}", retryable=True) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise FaxError(f"fax API HTTP {status}", retryable=True)
        if status in (401, 403):
            raise FaxError(
                f"fax API HTTP {status}: the API key and secret were refused", retryable=False
            )
        if status >= 400:
            raise FaxError(
                f"fax API HTTP {status}: the request was refused (check the fax number)",
                retryable=False,
            )
        fax_id = _fax_id(response)
        if fax_id is None:
            # Not a Phaxio answer (a proxy's page?): whether the fax was queued is unknown,
            # and a second copy to the same practice does less harm than none.
            raise FaxError(f"fax API HTTP {status} without a fax id", retryable=True)
        return fax_id


def _fax_id(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("success") is not True:
        return None
    data = payload.get("data")
    fax_id = data.get("id") if isinstance(data, dict) else None
    return str(fax_id) if isinstance(fax_id, int | str) and not isinstance(fax_id, bool) else None


class PhaxioFaxChannel:
    """The report as a PDF page, faxed through Phaxio. The credentials are read from
    Vault at each delivery: a rotated secret is used at once."""

    channel = Channel.FAX

    def __init__(
        self,
        credentials: SecretSource,
        *,
        secret_path: str,
        base_url: str = PHAXIO_API_BASE,
        header_text: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._credentials = credentials
        self._path = secret_path
        self._base_url = base_url
        self._header = header_text
        self._timeout = timeout_s

    def document(self, report: RenderedReport) -> bytes:
        notice = (
            "CONFIDENTIAL: this fax holds health information for the addressee only. If it "
            "reached you in error, tell the sender and destroy it."
        )
        return text_pdf("\n".join([report.subject, "", report.body, "", notice]))

    async def send(self, report: RenderedReport, recipient: Recipient) -> Delivery:
        try:
            secret = await self._credentials()
        except VaultUnavailable:
            return Delivery(False, retryable=True, error="Vault unavailable for the fax API")
        api_key, api_secret = secret.get("api_key"), secret.get("api_secret")
        if not (isinstance(api_key, str) and isinstance(api_secret, str)) or not (
            api_key and api_secret
        ):
            return Delivery(
                False,
                error=(
                    f"no fax API credentials at secret/{self._path}: write its fields "
                    "`api_key` and `api_secret`"
                ),
            )
        client = PhaxioClient(
            self._base_url, FaxCredentials(api_key, api_secret), timeout_s=self._timeout
        )
        try:
            fax_id = await client.send_fax(
                to=recipient.address,
                pdf=self.document(report),
                filename=f"{report.key}.pdf",
                header_text=self._header,
                # Lets whoever reads Phaxio's log find the report a fax carried.
                tags={"report": report.key},
            )
        except FaxError as exc:
            return Delivery(False, retryable=exc.retryable, error=str(exc))
        return Delivery(True, provider_id=f"phaxio-{fax_id}")
