"""A real SMTP server for tests (aiosmtpd on a free local port): the stand-in for the
mail relay of every service that sends email.

It accepts everything, except recipients whose local part says otherwise:
`greylisted…` gets a transient 450, `nobody…` a permanent 550, so a test can exercise
both kinds of refusal.

`HispCollector` is the receiving side of Direct messaging: it holds the private keys of
its mailboxes, decrypts each S/MIME envelope addressed to one, verifies the signature
against the senders it trusts, and refuses (554 5.7.5) what it cannot open, as a HISP
does. Keys and certificates are made at test time (`careloop_kit.smime.smime_identity`).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import (
    pkcs7,
)

from careloop_kit.infra.ports import free_port
from careloop_kit.smime import SmimeIdentity


@dataclass
class SmtpCollector:
    """aiosmtpd handler that keeps every message it accepts, with its envelope."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("greylisted"):
            return "450 4.7.1 Greylisted, try again later"
        if address.startswith("nobody"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        parsed = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append(envelope)
        return "250 Message accepted"


class SmimeError(Exception):
    """The message is not an S/MIME envelope this mailbox can open and trust."""


@dataclass(frozen=True)
class OpenedSmime:
    """What a Direct message held: the signed entity as decrypted, its content, and the
    certificate that signed it."""

    recipient: str
    signed: bytes
    content: EmailMessage
    signer: x509.Certificate

    @property
    def text(self) -> str:
        body: Any = self.content.get_content()
        return str(body)


_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")  # 1.2.840.113549.1.9.4
_SHA256 = bytes.fromhex("608648016503040201")  # 2.16.840.1.101.3.4.2.1


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    tag, length = data[at], data[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in data[start:end]."""
    out = []
    at = start
    while at < end:
        tag, value_start, value_end = _tlv(data, at)
        out.append((tag, at, value_start, value_end))
        at = value_end
    return out


def verify_detached(
    content: bytes, signature_der: bytes, trusted: list[x509.Certificate]
) -> x509.Certificate:
    """The trusted certificate whose key made `signature_der` (CMS SignedData, detached,
    SHA-256 with signed attributes) over `content`; `SmimeError` otherwise."""
    _, ci_start, ci_end = _tlv(signature_der, 0)
    content_info = _children(signature_der, ci_start, ci_end)
    if len(content_info) != 2 or content_info[1][0] != 0xA0:
        raise SmimeError("not a CMS ContentInfo")
    sd_start = content_info[1][2]
    _, sd_value, sd_value_end = _tlv(signature_der, sd_start)
    signed_data = _children(signature_der, sd_value, sd_value_end)
    signer_infos = signed_data[-1]
    [signer_info] = _children(signature_der, signer_infos[2], signer_infos[3])
    fields = _children(signature_der, signer_info[2], signer_info[3])
    attributes = next((f for f in fields if f[0] == 0xA0), None)
    if attributes is None:
        raise SmimeError("the signature has no signed attributes")
    digest_algorithm = signature_der[fields[2][2] : fields[2][3]]
    if _SHA256 not in digest_algorithm:
        raise SmimeError("the signature's digest is not SHA-256")
    signature = next(f for f in fields[fields.index(attributes) + 1 :] if f[0] == 0x04)
    digest = None
    for _, _, attr_start, attr_end in _children(signature_der, attributes[2], attributes[3]):
        oid, values = _children(signature_der, attr_start, attr_end)
        if signature_der[oid[2] : oid[3]] == _MESSAGE_DIGEST:
            [found] = _children(signature_der, values[2], values[3])
            digest = signature_der[found[2] : found[3]]
    if digest != hashlib.sha256(content).digest():
        raise SmimeError("the content does not match the signed message digest")
    # The signature covers the attributes DER-encoded as a SET, not with their [0] tag.
    signed_attributes = b"\x31" + signature_der[attributes[1] + 1 : attributes[3]]
    signature_value = signature_der[signature[2] : signature[3]]
    embedded = pkcs7.load_der_pkcs7_certificates(signature_der)
    for certificate in trusted:
        if certificate not in embedded:
            continue
        public = certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        try:
            public.verify(signature_value, signed_attributes, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return certificate
    raise SmimeError("no trusted sender signed the message")


def open_smime(
    message: EmailMessage, mailbox: SmimeIdentity, trusted: list[x509.Certificate]
) -> OpenedSmime:
    """Decrypt a Direct message with the mailbox's key and verify its signature."""
    if message.get_content_type() != "application/pkcs7-mime":
        raise SmimeError(f"not an S/MIME envelope but {message.get_content_type()}")
    if message.get_param("smime-type") != "enveloped-data":
        raise SmimeError("the S/MIME part is not enveloped-data")
    envelope: Any = message.get_content()
    try:
        signed = pkcs7.pkcs7_decrypt_der(bytes(envelope), mailbox.certificate, mailbox.key, [])
    except ValueError as exc:
        raise SmimeError(f"the envelope does not open with the key of {mailbox.address}") from exc
    header, _, _ = signed.partition(b"\r\n\r\n")
    found = re.search(rb'boundary="?([^";\r\n]+)"?', header)
    if not header.lower().startswith(b"content-type: multipart/signed") or found is None:
        raise SmimeError("the envelope does not hold a multipart/signed entity")
    boundary = b"--" + found.group(1)
    _, _, rest = signed.partition(boundary + b"\r\n")
    content, _, rest = rest.partition(b"\r\n" + boundary + b"\r\n")
    signature_part, _, _ = rest.partition(b"\r\n" + boundary + b"--")
    parsed_signature = email.message_from_bytes(signature_part, policy=email.policy.default)
    assert isinstance(parsed_signature, EmailMessage)
    if parsed_signature.get_content_type() not in (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ):
        raise SmimeError("the second part of multipart/signed is not a signature")
    signature: Any = parsed_signature.get_content()
    signer = verify_detached(content, bytes(signature), trusted)
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return OpenedSmime(mailbox.address, signed, parsed, signer)


@dataclass
class HispCollector(SmtpCollector):
    """A HISP's inbound side: keeps every message (like `SmtpCollector`), opens those to
    its mailboxes into `opened`, and refuses those it cannot open or trust."""

    mailboxes: dict[str, SmimeIdentity] = field(default_factory=dict)
    trusted: list[x509.Certificate] = field(default_factory=list)
    opened: list[OpenedSmime] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        parsed = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(parsed, EmailMessage)
        opened = []
        for address in envelope.rcpt_tos:
            mailbox = self.mailboxes.get(address)
            if mailbox is None:
                continue
            try:
                opened.append(open_smime(parsed, mailbox, self.trusted))
            except SmimeError:
                return "554 5.7.5 Cryptographic failure"
        self.opened.extend(opened)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def smtp_server(collector: SmtpCollector | None = None) -> Iterator[tuple[SmtpCollector, int]]:
    """A local SMTP server on a free port: (collector, port)."""
    collector = collector or SmtpCollector()
    port = free_port()
    # aiosmtpd logs every envelope recipient at INFO: the stand-in relay would write
    # recipients' addresses into the logs the PHI log scan reads.
    smtp_log = logging.getLogger("mail.log")
    level = smtp_log.level
    smtp_log.setLevel(logging.WARNING)
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield collector, port
    finally:
        controller.stop()
        smtp_log.setLevel(level)


def email_texts(message: EmailMessage) -> list[str]:
    """Subject and every text part of an email, for PHI scans."""
    texts: list[str] = [str(message["Subject"])]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            content: Any = part.get_content()
            texts.append(str(content))
    return texts
