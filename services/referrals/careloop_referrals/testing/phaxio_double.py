"""A local stand-in for Phaxio's v2.1 fax API that speaks the same HTTP.

It accepts ``POST /v2.1/faxes`` (multipart/form-data: ``to``, one or more ``file`` parts,
optional ``header_text`` and ``tags[...]``) with HTTP Basic auth (API key and secret),
answers with Phaxio-shaped JSON (``{"success": true, "message": "Fax queued for
sending", "data": {"id": ...}}``) and errors (401, 422, 429, 500), and keeps every fax
it queued with its files. Tell it to fail the next N requests to exercise retries.

Serve it with :func:`careloop_kit.testing.apps.serve_in_task` and point
:class:`careloop_referrals.channels.fax.PhaxioFaxChannel` at ``<url>/v2.1``.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import re
import zlib
from dataclasses import dataclass, field
from email.message import EmailMessage

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from careloop_kit.testing.http_auth import basic_auth_matches

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class ReceivedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class QueuedFax:
    id: int
    to: str
    files: list[ReceivedFile]
    header_text: str | None
    tags: dict[str, str]
    authorization: str


@dataclass
class PhaxioDouble:
    """One fake Phaxio account. ``app`` is the ASGI app to serve."""

    api_key: str
    api_secret: str
    faxes: list[QueuedFax] = field(default_factory=list)
    requests: int = 0
    _failures: list[int] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(323034811))

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/v2.1/faxes", self._create_fax, methods=["POST"])])

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer the next ``count`` requests with ``status`` (429 or 5xx, or a 4xx)."""
        self._failures.extend([status] * count)

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return basic_auth_matches(header, self.api_key, self.api_secret)

    async def _create_fax(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self._failures:
            status = self._failures.pop(0)
            messages = {429: "Rate limit exceeded", 422: "Invalid request"}
            return _error(status, messages.get(status, "Internal server error"))
        if not self._authorized(request):
            return _error(401, "Invalid API credentials")
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error(422, "Request must be multipart/form-data")
        fields, files = _multipart(content_type, await request.body())
        to = fields.get("to")
        if not to:
            return _error(422, "You must provide a phone number in the to parameter")
        if not _E164.match(to):
            return _error(422, "Phone number is not formatted correctly or invalid")
        if not files:
            return _error(422, "You must include a file or content_url")
        if any(not f.data.startswith(b"%PDF-") for f in files if f.content_type.endswith("pdf")):
            return _error(422, "The file could not be processed")
        tags = {
            name[5:-1]: value
            for name, value in fields.items()
            if name.startswith("tags[") and name.endswith("]")
        }
        fax = QueuedFax(
            id=next(self._ids),
            to=to,
            files=files,
            header_text=fields.get("header_text"),
            tags=tags,
            authorization=request.headers["authorization"],
        )
        self.faxes.append(fax)
        return JSONResponse(
            {"success": True, "message": "Fax queued for sending", "data": {"id": fax.id}}
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[ReceivedFile]]:
    # Parsed with the stdlib's MIME parser: Starlette's form parser needs python-multipart,
    # which the workspace does not install.
    parsed = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    assert isinstance(parsed, EmailMessage)
    fields: dict[str, str] = {}
    files: list[ReceivedFile] = []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files.append(ReceivedFile(filename, part.get_content_type(), data))
        else:
            fields[name] = data.decode()
    return fields, files


def pdf_text(document: bytes) -> tuple[int, str]:
    """(page count, text shown) of a PDF whose content streams draw text with `Tj`, `'`
    or `TJ`, as a fax provider's rasteriser reads it: through the cross-reference table
    (each offset must land on its object) from the trailer's root, page by page."""
    if not document.startswith(b"%PDF-") or not document.rstrip().endswith(b"%%EOF"):
        raise ValueError("not a PDF document")
    startxref = int(document[document.rindex(b"startxref") + 9 :].split()[0])
    if not document[startxref:].startswith(b"xref"):
        raise ValueError("startxref does not point at the xref table")
    lines = document[startxref:].split(b"\n")
    first, count = (int(v) for v in lines[1].split())
    offsets: dict[int, int] = {}
    for number, entry in enumerate(lines[2 : 2 + count], start=first):
        offset, _, kind = entry.split()[:3]
        if kind == b"n":
            offsets[number] = int(offset)
    trailer = document[document.rindex(b"trailer") :]
    root = _ref(trailer, b"/Root")

    def obj(number: int) -> bytes:
        at = offsets[number]
        head = b"%d 0 obj" % number
        if not document[at:].startswith(head):
            raise ValueError(f"xref offset of object {number} is wrong")
        return document[at + len(head) : document.index(b"endobj", at)]

    pages = obj(_ref(obj(root), b"/Pages"))
    kids = [int(n) for n in re.findall(rb"(\d+) 0 R", pages[pages.index(b"/Kids") :])]
    texts = []
    for kid in kids:
        page = obj(kid)
        if b"/Type /Page" not in page:
            raise ValueError(f"object {kid} is not a page")
        texts.append(_shown(_stream(obj(_ref(page, b"/Contents")))))
    return len(kids), "\n".join(texts)


def _ref(data: bytes, key: bytes) -> int:
    found = re.search(re.escape(key) + rb"\s+(\d+)\s+0\s+R", data)
    if found is None:
        raise ValueError(f"no {key.decode()} reference")
    return int(found.group(1))


def _stream(body: bytes) -> bytes:
    length = int(re.search(rb"/Length\s+(\d+)", body).group(1))  # type: ignore[union-attr]
    start = body.index(b"stream") + len(b"stream")
    start += 2 if body[start : start + 2] == b"\r\n" else 1
    data = body[start : start + length]
    return zlib.decompress(data) if b"/FlateDecode" in body[:start] else data


def _shown(content: bytes) -> str:
    lines = []
    for literal, _ in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*(Tj|'|TJ)", content):
        lines.append(_unescape(literal))
    return "\n".join(lines)


def _unescape(literal: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(literal):
        byte = literal[i]
        if byte == 0x5C:  # backslash
            nxt = literal[i + 1 : i + 4]
            if nxt[:1].isdigit():
                digits = re.match(rb"[0-7]{1,3}", nxt).group(0)  # type: ignore[union-attr]
                out.append(int(digits, 8))
                i += 1 + len(digits)
                continue
            escapes = {b"n": 10, b"r": 13, b"t": 9, b"b": 8, b"f": 12}
            out.append(escapes.get(nxt[:1], nxt[0]))
            i += 2
            continue
        out.append(byte)
        i += 1
    return out.decode("cp1252", errors="replace")
