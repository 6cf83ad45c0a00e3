"""Outcome reports by Direct messaging (the Direct Project's Applicability Statement for
Secure Health Transport): SMTP to the practice's HISP, the message S/MIME-protected end
to end.

The report is a text/plain MIME entity, signed with the practice's Direct certificate
(a detached SHA-256 signature, `multipart/signed`) and the signed entity enveloped with
AES-256-CBC to the recipient's certificate (`application/pkcs7-mime;
smime-type=enveloped-data`), as RFC 5751 describes. Only the outer headers travel in
clear, and they name no patient (the subject is the report's). The sender's key and
certificate come from Vault at each delivery, the recipient's certificate from the
directory entry.

What is worth a retry follows the kit's SMTP sender (4xx, the network, Vault down). A
missing or expired certificate, or sender credentials that are not there, fail the
report at once with the fix in the error: no retry would mend them.
"""

from __future__ import annotations

import base64
import secrets
import textwrap
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from careloop_kit.clock import Clock
from careloop_kit.smime import CONTENT_ENCRYPTION
from careloop_kit.smtp import SmtpConfig, send_email
from careloop_kit.vault import VaultUnavailable
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import Delivery, Recipient, RenderedReport

SecretSource = Callable[[], Awaitable[Mapping[str, Any]]]


class DirectRefused(Exception):
    """The report cannot be protected as Direct requires; the message says the fix."""


@dataclass(frozen=True)
class DirectSender:
    """The practice's Direct identity, as Vault holds it."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    relay_username: str | None = None
    relay_password: str | None = None


def sender_of(secret: Mapping[str, Any], path: str) -> DirectSender:
    """The sender in the Vault secret at `path`, or `DirectRefused` naming what is wrong."""
    key_pem, cert_pem = secret.get("key"), secret.get("certificate")
    if not (isinstance(key_pem, str) and key_pem and isinstance(cert_pem, str) and cert_pem):
        raise DirectRefused(
            f"no Direct sender credentials at secret/{path}: write its fields `key` (PEM "
            "private key) and `certificate` (PEM)"
        )
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    except (ValueError, TypeError) as exc:
        raise DirectRefused(
            f"the Direct sender `key` or `certificate` at secret/{path} is not PEM "
            "(an unencrypted private key and an X.509 certificate)"
        ) from exc
    public = certificate.public_key()
    if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
        raise DirectRefused(f"the Direct sender key at secret/{path} must be RSA")
    if key.public_key().public_numbers() != public.public_numbers():
        raise DirectRefused(
            f"the Direct sender `key` at secret/{path} does not belong to its `certificate`"
        )
    username, password = secret.get("relay_username"), secret.get("relay_password")
    return DirectSender(
        key,
        certificate,
        relay_username=username if isinstance(username, str) and username else None,
        relay_password=password if isinstance(password, str) and password else None,
    )


def _valid_at(certificate: x509.Certificate, now: datetime, whose: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise DirectRefused(
            f"{whose} is not valid before {certificate.not_valid_before_utc.isoformat()}"
        )
    if now >= certificate.not_valid_after_utc:
        raise DirectRefused(
            f"{whose} expired on {certificate.not_valid_after_utc.date().isoformat()}: renew it"
        )


def signed_entity(body: str, sender: DirectSender) -> bytes:
    """`body` as a text/plain entity inside `multipart/signed` (RFC 5751 section 3.4.3)."""
    part = MIMEPart(policy=SMTP)
    # Quoted-printable keeps the signed bytes 7-bit: relays may not rewrite them.
    part.set_content(body, cte="quoted-printable")
    content = part.as_bytes(policy=SMTP)
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(sender.certificate, sender.key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            # Binary: the content is already canonical (CRLF), sign it byte for byte.
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
    boundary = f"----=_careloop_{secrets.token_hex(12)}"
    encoded = "\r\n".join(textwrap.wrap(base64.b64encode(signature).decode(), 76))
    return b"".join(
        [
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'micalg=sha-256; boundary="%s"\r\n\r\n' % boundary.encode(),
            b"--%s\r\n" % boundary.encode(),
            content,
            b"\r\n--%s\r\n" % boundary.encode(),
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n',
            encoded.encode(),
            b"\r\n--%s--\r\n" % boundary.encode(),
        ]
    )


def enveloped(entity: bytes, recipient: x509.Certificate) -> bytes:
    """`entity` encrypted to `recipient` (CMS EnvelopedData, DER)."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(entity)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(CONTENT_ENCRYPTION)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


class DirectChannel:
    channel = Channel.DIRECT

    def __init__(
        self,
        relay: SmtpConfig,
        credentials: SecretSource,
        *,
        secret_path: str,
        from_address: str,
        message_id_domain: str,
        clock: Clock,
    ) -> None:
        self._relay = relay
        self._credentials = credentials
        self._path = secret_path
        self._from = from_address
        self._domain = message_id_domain
        self._clock = clock

    def build(
        self, report: RenderedReport, recipient: Recipient, sender: DirectSender
    ) -> EmailMessage:
        """The Direct message, or `DirectRefused` when it cannot be protected."""
        if not recipient.certificate:
            raise DirectRefused(
                "the referring provider's directory entry has no `direct_certificate`: add "
                "the certificate their HISP publishes for the address, then write the "
                "outcome again"
            )
        now = self._clock.now()
        _valid_at(sender.certificate, now, "the practice's Direct certificate")
        theirs = x509.load_pem_x509_certificate(recipient.certificate.encode())
        _valid_at(theirs, now, "the referring provider's Direct certificate")
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = recipient.address
        message["Subject"] = report.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        # From the report's key: a retried send carries the same Message-ID.
        message["Message-ID"] = f"<{report.key}@{self._domain}>"
        message.set_content(
            enveloped(signed_entity(report.body, sender), theirs),
            maintype="application",
            subtype="pkcs7-mime",
            params={"smime-type": "enveloped-data", "name": "smime.p7m"},
            disposition="attachment",
            filename="smime.p7m",
        )
        return message

    async def send(self, report: RenderedReport, recipient: Recipient) -> Delivery:
        try:
            sender = sender_of(await self._credentials(), self._path)
            message = self.build(report, recipient, sender)
        except VaultUnavailable:
            return Delivery(False, retryable=True, error="Vault unavailable for the Direct key")
        except DirectRefused as exc:
            return Delivery(False, error=str(exc))
        relay = replace(self._relay, username=sender.relay_username, password=sender.relay_password)
        result = await send_email(message, relay)
        return Delivery(
            result.accepted,
            retryable=result.retryable,
            error=result.error,
            provider_id=result.message_id,
        )
