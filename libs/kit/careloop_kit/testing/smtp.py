"""A real SMTP server for tests (aiosmtpd on a free local port): the stand-in for the
mail relay of every service that sends email.

It accepts everything, except recipients whose local part says otherwise:
`greylisted…` gets a transient 450, `nobody…` a permanent 550, so a test can exercise
both kinds of refusal.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from careloop_kit.infra.ports import free_port


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


@contextmanager
def smtp_server() -> Iterator[tuple[SmtpCollector, int]]:
    """A local SMTP server on a free port: (collector, port)."""
    collector = SmtpCollector()
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
