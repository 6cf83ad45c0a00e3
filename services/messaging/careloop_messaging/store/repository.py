"""Messages and opt-outs: every query of the messaging database lives here.

Repositories take the caller's session and never commit: the consumer, the delivery
worker or the request decides the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.crypto import BlindIndexer, FieldContext, decrypt_field, encrypt_field
from careloop_messaging.domain.outreach import (
    BUDGET_WINDOW,
    UNSOLICITED_EXEMPT_TOUCHES,
    MessageStatus,
    Recipient,
)
from careloop_messaging.domain.templates import Channel
from careloop_messaging.store.tables import message, opt_out

RECIPIENT_KEY_ID = "recipient-v1"


class RecipientCipher:
    """Encrypts stored addresses and computes their blind index.

    Both keys are derived (HKDF, distinct labels) from one master secret kept in Vault:
    the encryption key is never the index key. The index is per organization and per
    channel, so the same phone number in two tenants gives unrelated tokens.
    """

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) < 32:
            raise ValueError("the recipient master key must be at least 32 bytes")
        self._aead_key = HKDF(
            algorithm=SHA256(), length=32, salt=None, info=b"messaging:recipient-encryption"
        ).derive(master_key)
        self._indexer = BlindIndexer(
            HKDF(
                algorithm=SHA256(), length=32, salt=None, info=b"messaging:recipient-index"
            ).derive(master_key)
        )

    def index(self, org_id: str, recipient: Recipient) -> str:
        return self._indexer.token(f"recipient:{recipient.channel}", org_id, recipient.address)

    def lookup(self, recipient: Recipient) -> str:
        """The address's token in every tenant (for inbound messages, which name no org)."""
        return self._indexer.token(f"recipient-any:{recipient.channel}", "*", recipient.address)

    def encrypt(self, org_id: str, message_id: str, address: str) -> bytes:
        return encrypt_field(self._aead_key, address, self._context(org_id, message_id))

    def decrypt(self, org_id: str, message_id: str, blob: bytes) -> str:
        return decrypt_field(self._aead_key, blob, self._context(org_id, message_id))

    @staticmethod
    def _context(org_id: str, message_id: str) -> FieldContext:
        return FieldContext(org_id, "message", "recipient", message_id, RECIPIENT_KEY_ID)


@dataclass(frozen=True)
class NewMessage:
    id: str
    org_id: str
    patient_id: str
    appointment_id: str | None
    location_id: str | None
    touch_key: str
    touch: str
    language: str
    practice_name: str
    sensitive_location: bool
    start_at: datetime
    time_zone: str
    link_token: str
    status: MessageStatus
    channel: Channel | None = None
    skip_reason: str | None = None
    recipient_ct: bytes | None = None
    recipient_index: str | None = None
    recipient_lookup: str | None = None
    offer_options: tuple[datetime, ...] | None = None
    offer_expires_at: datetime | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: str
    org_id: str
    patient_id: str
    appointment_id: str | None
    location_id: str | None
    touch_key: str
    touch: str
    channel: Channel | None
    status: MessageStatus
    provider_id: str | None
    recipient_ct: bytes | None
    language: str
    practice_name: str
    sensitive_location: bool
    start_at: datetime
    time_zone: str
    link_token: str
    attempts: int
    offer_options: tuple[datetime, ...] | None = None
    offer_expires_at: datetime | None = None


# Messages a patient can have received, so that a reply can answer them.
ANSWERABLE_STATUSES = ("sent", "delivered")


def _stored(row: object) -> StoredMessage:
    r = row._mapping  # type: ignore[attr-defined]
    return StoredMessage(
        id=r["id"],
        org_id=r["org_id"],
        patient_id=r["patient_id"],
        appointment_id=r["appointment_id"],
        location_id=r["location_id"],
        touch_key=r["touch_key"],
        touch=r["touch"],
        channel=Channel(r["channel"]) if r["channel"] else None,
        status=MessageStatus(r["status"]),
        provider_id=r["provider_id"],
        recipient_ct=r["recipient_ct"],
        language=r["language"],
        practice_name=r["practice_name"],
        sensitive_location=r["sensitive_location"],
        start_at=r["start_at"],
        time_zone=r["time_zone"],
        link_token=r["link_token"],
        attempts=r["attempts"],
        offer_options=tuple(r["offer_options"]) if r["offer_options"] is not None else None,
        offer_expires_at=r["offer_expires_at"],
    )


class Messages:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def touch_exists(self, touch_key: str) -> bool:
        found = await self._session.scalar(
            select(message.c.id).where(message.c.touch_key == touch_key)
        )
        return found is not None

    async def lock_patient(self, org_id: str, patient_id: str) -> None:
        """Serialize budget decisions for one patient until the transaction ends.

        Events of one patient share a partition and arrive in order, but a replayed
        dead letter or a second program could race; the count must not be read twice.
        """
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"messaging-budget:{org_id}:{patient_id}"},
        )

    async def count_automated_since(self, org_id: str, patient_id: str, now: datetime) -> int:
        """Unsolicited messages that did or will reach the patient in the budget window
        (answers to the patient's own requests, such as offers, are not counted)."""
        counted = [MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED]
        count = await self._session.scalar(
            select(func.count())
            .select_from(message)
            .where(
                message.c.org_id == org_id,
                message.c.patient_id == patient_id,
                message.c.created_at > now - BUDGET_WINDOW,
                message.c.status.in_([s.value for s in counted]),
                message.c.touch.not_in(sorted(UNSOLICITED_EXEMPT_TOUCHES)),
            )
        )
        return int(count or 0)

    async def add(self, new: NewMessage, *, now: datetime) -> bool:
        """Insert; False when the touch already has its message (a concurrent duplicate)."""
        inserted = await self._session.scalar(
            insert(message)
            .values(
                id=new.id,
                org_id=new.org_id,
                patient_id=new.patient_id,
                appointment_id=new.appointment_id,
                location_id=new.location_id,
                touch_key=new.touch_key,
                touch=new.touch,
                channel=new.channel.value if new.channel else None,
                status=new.status.value,
                skip_reason=new.skip_reason,
                recipient_ct=new.recipient_ct,
                recipient_index=new.recipient_index,
                recipient_lookup=new.recipient_lookup,
                language=new.language,
                practice_name=new.practice_name,
                sensitive_location=new.sensitive_location,
                start_at=new.start_at,
                time_zone=new.time_zone,
                link_token=new.link_token,
                offer_options=list(new.offer_options) if new.offer_options is not None else None,
                offer_expires_at=new.offer_expires_at,
                attempts=0,
                next_attempt_at=now if new.status is MessageStatus.QUEUED else None,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["touch_key"])
            .returning(message.c.id)
        )
        return inserted is not None

    async def orgs_that_messaged(self, channel: Channel, lookup: str) -> set[str]:
        """Organizations that queued a message to this address on this channel."""
        found = await self._session.scalars(
            select(message.c.org_id)
            .where(message.c.channel == channel.value, message.c.recipient_lookup == lookup)
            .distinct()
        )
        return set(found)

    async def latest_answerable(self, channel: Channel, lookup: str) -> StoredMessage | None:
        """The latest message about an appointment that reached this address: the one a
        keyword reply answers."""
        row = (
            await self._session.execute(
                select(message)
                .where(message.c.channel == channel.value, message.c.recipient_lookup == lookup)
                .where(message.c.appointment_id.is_not(None))
                .where(message.c.status.in_(ANSWERABLE_STATUSES))
                .order_by(message.c.updated_at.desc(), message.c.id.desc())
                .limit(1)
            )
        ).first()
        return _stored(row) if row is not None else None

    async def claim_due(self, now: datetime) -> StoredMessage | None:
        """The next queued message due now, locked for this transaction (other workers
        skip it)."""
        row = (
            await self._session.execute(
                select(message)
                .where(message.c.status == MessageStatus.QUEUED.value)
                .where(message.c.next_attempt_at <= now)
                .order_by(message.c.next_attempt_at, message.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).first()
        return _stored(row) if row is not None else None

    async def get(self, message_id: str) -> StoredMessage | None:
        row = (
            await self._session.execute(select(message).where(message.c.id == message_id))
        ).first()
        return _stored(row) if row is not None else None

    async def by_provider_id(self, provider_id: str) -> StoredMessage | None:
        row = (
            await self._session.execute(
                select(message).where(message.c.provider_id == provider_id).with_for_update()
            )
        ).first()
        return _stored(row) if row is not None else None

    async def mark_sent(
        self, message_id: str, *, provider_id: str | None, attempts: int, now: datetime
    ) -> None:
        await self._update(
            message_id,
            status=MessageStatus.SENT.value,
            provider_id=provider_id,
            attempts=attempts,
            next_attempt_at=None,
            last_error=None,
            updated_at=now,
        )

    async def schedule_retry(
        self, message_id: str, *, attempts: int, at: datetime, error: str | None, now: datetime
    ) -> None:
        await self._update(
            message_id, attempts=attempts, next_attempt_at=at, last_error=error, updated_at=now
        )

    async def mark_failed(
        self, message_id: str, *, attempts: int, error: str | None, now: datetime
    ) -> None:
        await self._update(
            message_id,
            status=MessageStatus.FAILED.value,
            attempts=attempts,
            next_attempt_at=None,
            last_error=error,
            updated_at=now,
        )

    async def set_status(
        self, message_id: str, status: MessageStatus, *, error: str | None, now: datetime
    ) -> None:
        values: dict[str, object] = {"status": status.value, "updated_at": now}
        if error is not None:
            values["last_error"] = error
        await self._update(message_id, **values)

    async def _update(self, message_id: str, **values: object) -> None:
        await self._session.execute(
            update(message).where(message.c.id == message_id).values(**values)
        )


class OptOuts:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def indexes(self, org_id: str, channel: Channel, candidates: list[str]) -> set[str]:
        """Which of these recipient indexes opted out of `channel`."""
        if not candidates:
            return set()
        found = await self._session.scalars(
            select(opt_out.c.recipient_index).where(
                opt_out.c.org_id == org_id,
                opt_out.c.channel == channel.value,
                opt_out.c.recipient_index.in_(candidates),
            )
        )
        return set(found)

    async def add(self, org_id: str, channel: Channel, recipient_index: str, now: datetime) -> None:
        await self._session.execute(
            insert(opt_out)
            .values(
                org_id=org_id,
                channel=channel.value,
                recipient_index=recipient_index,
                opted_out_at=now,
            )
            .on_conflict_do_nothing(constraint="uq_opt_out_recipient")
        )

    async def remove(self, org_id: str, channel: Channel, recipient_index: str) -> None:
        await self._session.execute(
            delete(opt_out).where(
                opt_out.c.org_id == org_id,
                opt_out.c.channel == channel.value,
                opt_out.c.recipient_index == recipient_index,
            )
        )
