"""A referral packet: the documents that come with a referral (the referral letter,
notes, results, images), stored sealed beside it for the specialist to read and, later,
for summaries.

What a packet may hold is checked before anything is stored: a few kinds of document
(the ones referral packets are sent as), each within a size, and a bounded count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ACCEPTED_TYPES = frozenset(
    {
        "application/pdf",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "text/plain",
        "application/fhir+json",
    }
)
MAX_DOCUMENTS = 10


class InvalidPacket(ValueError):
    """The packet breaks a rule; the message names the document and the rule."""


@dataclass(frozen=True)
class PacketDocument:
    content_type: str
    data: bytes
    filename: str | None = None


def checked_packet(documents: Sequence[PacketDocument], *, max_bytes: int) -> None:
    """Raise `InvalidPacket` for the first rule the packet breaks."""
    if not documents:
        raise InvalidPacket("A referral packet holds at least one document.")
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidPacket(f"A referral packet holds at most {MAX_DOCUMENTS} documents.")
    for number, document in enumerate(documents, start=1):
        if document.content_type not in ACCEPTED_TYPES:
            raise InvalidPacket(
                f"Document {number} is {document.content_type}; a packet takes "
                f"{', '.join(sorted(ACCEPTED_TYPES))}."
            )
        if not document.data:
            raise InvalidPacket(f"Document {number} is empty.")
        if len(document.data) > max_bytes:
            raise InvalidPacket(
                f"Document {number} is {len(document.data)} bytes; at most {max_bytes} "
                "(CARELOOP_MAX_DOCUMENT_BYTES)."
            )
