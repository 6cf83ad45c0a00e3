"""The Direct message as a receiving HISP opens it: the envelope opens only with the
recipient's key, the signature holds only over the bytes that were signed and only for
a trusted sender, and the sender's credentials are checked before anything is sent."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from careloop_kit.clock import FrozenClock
from careloop_kit.smime import SmimeIdentity, smime_identity
from careloop_kit.smtp import SmtpConfig
from careloop_kit.testing.smtp import SmimeError, open_smime
from careloop_referrals.channels.direct import (
    DirectChannel,
    DirectRefused,
    DirectSender,
    enveloped,
    sender_of,
    signed_entity,
)
from careloop_referrals.domain.outcome import Recipient, RenderedReport

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ISSUED = datetime(2025, 6, 1, tzinfo=UTC)
REPORT = RenderedReport(
    "outcome-r1-20260302090000",
    "Referral outcome report r1",
    "Synthetic outcome (marker-UNIT-11): seen, no follow-up.\nLine two, caf\u00e9.",
)


@pytest.fixture(scope="module")
def people() -> tuple[SmimeIdentity, SmimeIdentity, SmimeIdentity]:
    return (
        smime_identity("referrals@direct.practice.example", valid_from=ISSUED),
        smime_identity("dr@direct.clinic.example", valid_from=ISSUED),
        smime_identity("mallory@direct.elsewhere.example", valid_from=ISSUED),
    )


def _sender(identity: SmimeIdentity) -> DirectSender:
    return sender_of({"key": identity.key_pem, "certificate": identity.certificate_pem}, "p")


def _channel() -> DirectChannel:
    async def no_secret() -> dict[str, str]:
        return {}

    return DirectChannel(
        SmtpConfig("127.0.0.1", 1),
        no_secret,
        secret_path="careloop/referrals/direct",
        from_address="referrals@direct.practice.example",
        message_id_domain="practice.example",
        clock=FrozenClock(NOW),
    )


def _wire(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(
        message.as_bytes(policy=email.policy.SMTP), policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_recipient_opens_the_report_and_the_signature_names_the_practice(
    people: tuple[SmimeIdentity, SmimeIdentity, SmimeIdentity],
) -> None:
    practice, doctor, _ = people
    message = _channel().build(
        REPORT, Recipient(doctor.address, doctor.certificate_pem), _sender(practice)
    )
    opened = open_smime(_wire(message), doctor, [practice.certificate])
    assert opened.signer == practice.certificate
    assert opened.text.replace("\r\n", "\n") == REPORT.body + "\n"
    assert message["Message-ID"] == "<outcome-r1-20260302090000@practice.example>"


def test_the_envelope_opens_with_no_other_key_and_trusts_no_other_signer(
    people: tuple[SmimeIdentity, SmimeIdentity, SmimeIdentity],
) -> None:
    practice, doctor, mallory = people
    to_doctor = Recipient(doctor.address, doctor.certificate_pem)
    message = _wire(_channel().build(REPORT, to_doctor, _sender(practice)))
    with pytest.raises(SmimeError, match="does not open"):
        open_smime(message, mallory, [practice.certificate])
    with pytest.raises(SmimeError, match="no trusted sender"):
        open_smime(message, doctor, [mallory.certificate])
    forged = _wire(_channel().build(REPORT, to_doctor, _sender(mallory)))
    with pytest.raises(SmimeError, match="no trusted sender"):
        open_smime(forged, doctor, [practice.certificate])


def test_content_changed_after_signing_fails_the_digest(
    people: tuple[SmimeIdentity, SmimeIdentity, SmimeIdentity],
) -> None:
    practice, doctor, _ = people
    signed = signed_entity(REPORT.body, _sender(practice))
    tampered = signed.replace(b"no follow-up", b"follow-up!!!", 1)
    assert tampered != signed
    message = EmailMessage()
    message.set_content(
        enveloped(tampered, doctor.certificate),
        maintype="application",
        subtype="pkcs7-mime",
        params={"smime-type": "enveloped-data"},
    )
    with pytest.raises(SmimeError, match="does not match the signed message digest"):
        open_smime(_wire(message), doctor, [practice.certificate])


def test_sender_credentials_and_certificates_are_checked_before_sending(
    people: tuple[SmimeIdentity, SmimeIdentity, SmimeIdentity],
) -> None:
    practice, doctor, mallory = people
    with pytest.raises(DirectRefused, match="write its fields `key`"):
        sender_of({"certificate": practice.certificate_pem}, "careloop/referrals/direct")
    with pytest.raises(DirectRefused, match="does not belong to its `certificate`"):
        sender_of({"key": mallory.key_pem, "certificate": practice.certificate_pem}, "p")
    with pytest.raises(DirectRefused, match="is not PEM"):
        sender_of({"key": "not a key", "certificate": "x"}, "p")
    with pytest.raises(DirectRefused, match="no `direct_certificate`"):
        _channel().build(REPORT, Recipient(doctor.address), _sender(practice))
    expired = smime_identity(doctor.address, valid_from=ISSUED, days=30)
    with pytest.raises(DirectRefused, match="provider's Direct certificate expired on 2025-07-01"):
        _channel().build(
            REPORT, Recipient(doctor.address, expired.certificate_pem), _sender(practice)
        )
