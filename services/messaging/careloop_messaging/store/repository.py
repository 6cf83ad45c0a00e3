"""Every query of the messaging database lives here: messages, opt-outs, secure links,
templates and the portal inbox.

Repositories take the caller's session and never commit: the consumer, the delivery
worker or the request decides the transaction.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.platform import MESSAGING_FIELDS_KEY
from careloop_kit.clock import Clock
from careloop_kit.crypto import BlindIndexer, KeyRing, MessageSigner, derive_key
from careloop_kit.fields import FieldCipher, LegacyKey, SealedColumn
from careloop_kit.rows import record_of, values_of
from careloop_kit.vault import Vault
from careloop_messaging.domain.outreach import (
    BUDGET_WINDOW,
    UNSOLICITED_EXEMPT_TOUCHES,
    MessageStatus,
    Recipient,
)
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    MessageTemplate,
    TemplateKey,
)
from careloop_messaging.store.tables import (
    field_key,
    inbox_item,
    message,
    message_template,
    opt_out,
)

TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
"""A link token's alphabet (base64url without padding); anything else is no token."""


LEGACY_RECIPIENT_KEY_ID = "recipient-v1"
LEGACY_INBOX_KEY_ID = "inbox-v1"
"""The DEK ids the associated data of addresses and of inbox items named before the kit's
port, when each use was sealed under its own key derived from the recipient secret."""

RECIPIENT_COLUMNS = (SealedColumn(message, "recipient_ct", "recipient"),)
INBOX_COLUMNS = (
    SealedColumn(inbox_item, "subject_ct", "subject"),
    SealedColumn(inbox_item, "body_ct", "body"),
)
"""Every column of messaging sealed through the port (with the column name the
associated data carries), grouped by the legacy key that opens what came before it."""


class RecipientCipher:
    """Seals stored addresses through the kit's field port and computes their blind index.

    The index key is derived (its own label) from the recipient secret in Vault, not from
    the transit key, so opt-outs and inbound replies keep matching through a transit key
    rotation. The index is per organization and per channel, so the same phone number in
    two tenants gives unrelated tokens.
    """

    def __init__(self, fields: FieldCipher, indexer: BlindIndexer) -> None:
        self.fields = fields
        self._indexer = indexer

    def index(self, org_id: str, recipient: Recipient) -> str:
        return self._indexer.token(f"recipient:{recipient.channel}", org_id, recipient.address)

    def lookup(self, recipient: Recipient) -> str:
        """The address's token in every tenant (for inbound messages, which name no org)."""
        return self._indexer.token(f"recipient-any:{recipient.channel}", "*", recipient.address)

    async def seal(
        self, session: AsyncSession, org_id: str, message_id: str, address: str
    ) -> bytes:
        """A message's address, sealed in the caller's transaction (which also stores the
        organization's data key, the first time)."""
        return await self.fields.seal_field(session, address, **self._where(org_id, message_id))

    async def open(self, session: AsyncSession, org_id: str, message_id: str, blob: bytes) -> str:
        return await self.fields.open_field(session, blob, **self._where(org_id, message_id))

    @staticmethod
    def _where(org_id: str, message_id: str) -> dict[str, str]:
        return {"org_id": org_id, "table": "message", "column": "recipient", "row_id": message_id}


class InboxCipher:
    """Seals what the portal inbox stores (subject and body may hold PHI) through the kit's
    field port. The associated data binds each field to its item, so a swapped ciphertext
    fails."""

    def __init__(self, fields: FieldCipher) -> None:
        self.fields = fields

    async def seal(
        self, session: AsyncSession, org_id: str, item_id: str, field: str, value: str
    ) -> bytes:
        return await self.fields.seal_field(session, value, **self._where(org_id, item_id, field))

    async def open(
        self, session: AsyncSession, org_id: str, item_id: str, field: str, blob: bytes
    ) -> str:
        return await self.fields.open_field(session, blob, **self._where(org_id, item_id, field))

    @staticmethod
    def _where(org_id: str, item_id: str, field: str) -> dict[str, str]:
        return {"org_id": org_id, "table": "inbox_item", "column": field, "row_id": item_id}


def field_ciphers(
    vault: Vault, recipient_key: bytes, *, clock: Clock | None = None
) -> tuple[RecipientCipher, InboxCipher]:
    """Messaging's ports to its sealed fields: data keys wrapped by the transit key
    `careloop-messaging-fields`, one key ring and one key table for both.

    `recipient_key` (the KV secret) derives the address blind index and the two keys that
    addresses and inbox items were sealed under before the port. The port's legacy
    fallback holds one key, so each use gets its own view of the port with its own legacy
    key; `careloop keys rewrap messaging` moves what those still open onto data keys.
    """
    if len(recipient_key) < 32:
        raise ValueError("the recipient master key must be at least 32 bytes")
    keys = KeyRing(vault, MESSAGING_FIELDS_KEY, clock=clock)

    def port(label: str, legacy_id: str) -> FieldCipher:
        legacy = LegacyKey(derive_key(recipient_key, label), legacy_id)
        return FieldCipher(keys, field_key, legacy=legacy)

    recipients = RecipientCipher(
        port("messaging:recipient-encryption", LEGACY_RECIPIENT_KEY_ID),
        BlindIndexer(derive_key(recipient_key, "messaging:recipient-index")),
    )
    inbox = InboxCipher(port("messaging:inbox-content", LEGACY_INBOX_KEY_ID))
    return recipients, inbox


class SecureLinks:
    """Secure one-time links: the token is the message id plus an HMAC-SHA256 of it under
    a key kept in Vault, so nothing usable sits in the database, and the delivery worker
    renders the same link again when it retries a message.

    Token (base64url, no padding): one format byte, the id (16 bytes for a UUID, else its
    UTF-8), then the first 12 bytes of the MAC. 96 bits cannot be guessed online (each
    guess is one rate-limited request) and keep the link short enough for one SMS:
    39 characters for a UUID id.
    """

    _UUID = b"\x01"
    _TEXT = b"\x02"
    MAC_BYTES = 12

    def __init__(self, master_key: bytes, base_url: str, *, previous: Sequence[bytes] = ()) -> None:
        # `previous`: link keys of before a rotation, still accepted until every link
        # they signed has lapsed; new links are signed with `master_key` only.
        self._signer = MessageSigner(
            master_key, label="messaging:secure-link", previous=previous, tag_bytes=self.MAC_BYTES
        )
        self._base = base_url.rstrip("/")

    @staticmethod
    def _message(message_id: str) -> bytes:
        return b"careloop-link-v1:" + message_id.encode()

    def token(self, message_id: str) -> str:
        body = self._TEXT + message_id.encode()
        with contextlib.suppress(ValueError):
            if str(uuid.UUID(message_id)) == message_id:
                body = self._UUID + uuid.UUID(message_id).bytes
        raw = body + self._signer.sign(self._message(message_id))
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def url(self, message_id: str) -> str:
        """The link put in the message."""
        return f"{self._base}/{self.token(message_id)}"

    def message_id(self, token: str) -> str | None:
        """The message a token names, or None: malformed and forged tokens alike."""
        if not 20 <= len(token) <= 400 or not TOKEN_CHARS.fullmatch(token):
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        kind, body, mac = raw[:1], raw[1 : -self.MAC_BYTES], raw[-self.MAC_BYTES :]
        try:
            if kind == self._UUID and len(body) == 16:
                message_id = str(uuid.UUID(bytes=body))
            elif kind == self._TEXT and body:
                message_id = body.decode()
            else:
                return None
        except UnicodeDecodeError:
            return None
        # Constant time: the comparison reveals nothing about how close a forgery came.
        if not self._signer.verify(self._message(message_id), mac):
            return None
        return message_id


@dataclass(frozen=True, kw_only=True)
class MessageFacts:
    """What a message row holds from the event that queued it: written as `NewMessage`,
    read back as `StoredMessage`."""

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
    status: MessageStatus
    channel: Channel | None = None
    recipient_ct: bytes | None = None
    offer_options: tuple[datetime, ...] | None = None
    offer_expires_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class NewMessage(MessageFacts):
    skip_reason: str | None = None
    recipient_index: str | None = None
    recipient_lookup: str | None = None


@dataclass(frozen=True, kw_only=True)
class StoredMessage(MessageFacts):
    provider_id: str | None
    attempts: int
    link_used_at: datetime | None = None
    link_action: str | None = None
    link_choice: int | None = None


# Messages a patient can have received, so that a reply can answer them.
ANSWERABLE_STATUSES = ("sent", "delivered")


def _stored(row: object) -> StoredMessage:
    return record_of(
        StoredMessage,
        row._mapping,  # type: ignore[attr-defined]
        convert={
            # No channel: a message skipped before one could be chosen.
            "channel": lambda value: Channel(value) if value else None,
            "status": MessageStatus,
            "offer_options": lambda value: None if value is None else tuple(value),
        },
    )


class Messages:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def touch_exists(self, touch_key: str) -> bool:
        found = await self._session.scalar(
            select(message.c.id).where(message.c.touch_key == touch_key)
        )
        return found is not None

    async def existing_touch_keys(self, touch_keys: list[str]) -> set[str]:
        """The given touch keys that already have their message."""
        if not touch_keys:
            return set()
        found = await self._session.scalars(
            select(message.c.touch_key).where(message.c.touch_key.in_(touch_keys))
        )
        return set(found)

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
                values_of(new)
                | {
                    "channel": new.channel.value if new.channel else None,
                    "status": new.status.value,
                    "offer_options": (
                        list(new.offer_options) if new.offer_options is not None else None
                    ),
                    "attempts": 0,
                    "next_attempt_at": now if new.status is MessageStatus.QUEUED else None,
                    "created_at": now,
                    "updated_at": now,
                }
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
        return await self._latest_sent_to(channel, lookup, message.c.appointment_id.is_not(None))

    async def by_touch_key(
        self, touch_key: str, *, for_update: bool = False
    ) -> StoredMessage | None:
        """The message of a touch (locked until the transaction ends with `for_update`)."""
        return await self._one(message.c.touch_key == touch_key, for_update=for_update)

    async def latest_sent(self, channel: Channel, lookup: str) -> StoredMessage | None:
        """The latest message of any kind that reached this address (a waitlist offer
        included, which names no appointment): the one a `Y` answers."""
        return await self._latest_sent_to(channel, lookup)

    async def claim_due(self, now: datetime) -> StoredMessage | None:
        """The next queued message due now, locked for this transaction (other workers
        skip it)."""
        return await self._first(
            select(message)
            .where(message.c.status == MessageStatus.QUEUED.value)
            .where(message.c.next_attempt_at <= now)
            .order_by(message.c.next_attempt_at, message.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )

    async def _latest_sent_to(
        self, channel: Channel, lookup: str, *conditions: ColumnElement[bool]
    ) -> StoredMessage | None:
        return await self._first(
            select(message)
            .where(message.c.channel == channel.value, message.c.recipient_lookup == lookup)
            .where(*conditions)
            .where(message.c.status.in_(ANSWERABLE_STATUSES))
            .order_by(message.c.sent_at.desc().nulls_last(), message.c.id.desc())
            .limit(1)
        )

    async def _one(
        self, condition: ColumnElement[bool], *, for_update: bool = False
    ) -> StoredMessage | None:
        query = select(message).where(condition)
        if for_update:
            query = query.with_for_update()
        return await self._first(query)

    async def _first(self, query: Select[Any]) -> StoredMessage | None:
        row = (await self._session.execute(query)).first()
        return _stored(row) if row is not None else None

    async def get(self, message_id: str) -> StoredMessage | None:
        return await self._one(message.c.id == message_id)

    async def get_for_update(self, message_id: str) -> StoredMessage | None:
        """The message, locked until the transaction ends: two taps on one secure link
        serialize here, so only the first acts."""
        return await self._one(message.c.id == message_id, for_update=True)

    async def use_link(
        self, message_id: str, *, action: str, choice: int | None, now: datetime
    ) -> None:
        """Spend the message's secure link on `action` (the row is locked by the caller)."""
        await self._update(
            message_id, link_used_at=now, link_action=action, link_choice=choice, updated_at=now
        )

    async def latest_link_action(
        self, org_id: str, appointment_id: str
    ) -> tuple[str, int | None, datetime] | None:
        """The last action taken through any secure link about this appointment (action,
        choice, when): all messaging knows of the appointment's state."""
        row = (
            await self._session.execute(
                select(message.c.link_action, message.c.link_choice, message.c.link_used_at)
                .where(
                    message.c.org_id == org_id,
                    message.c.appointment_id == appointment_id,
                    message.c.link_used_at.is_not(None),
                )
                .order_by(message.c.link_used_at.desc(), message.c.id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        return str(row.link_action), row.link_choice, row.link_used_at

    async def by_provider_id(self, provider_id: str) -> StoredMessage | None:
        """The message a provider's status callback names, locked like `get_for_update`."""
        return await self._one(message.c.provider_id == provider_id, for_update=True)

    async def mark_sent(
        self, message_id: str, *, provider_id: str | None, attempts: int, now: datetime
    ) -> None:
        await self._settle(
            message_id,
            MessageStatus.SENT,
            attempts=attempts,
            error=None,
            now=now,
            provider_id=provider_id,
            sent_at=now,
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
        await self._settle(
            message_id, MessageStatus.FAILED, attempts=attempts, error=error, now=now
        )

    async def _settle(
        self,
        message_id: str,
        status: MessageStatus,
        *,
        attempts: int,
        error: str | None,
        now: datetime,
        **values: object,
    ) -> None:
        """The last delivery attempt's outcome: the message leaves the queue."""
        await self._update(
            message_id,
            status=status.value,
            attempts=attempts,
            next_attempt_at=None,
            last_error=error,
            updated_at=now,
            **values,
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


ORG_DEFAULT = ""
"""`message_template.location_id` of an organization's default template."""


@dataclass(frozen=True)
class TemplateVersion:
    """One saved version of a template key; `template` is None for a revert."""

    id: str
    key: TemplateKey
    version: int
    deleted: bool
    updated_by: str
    created_at: datetime
    template: MessageTemplate | None


def _version(row: object) -> TemplateVersion:
    r = row._mapping  # type: ignore[attr-defined]
    key = TemplateKey(
        kind=MessageKind(r["kind"]),
        channel=Channel(r["channel"]),
        language=r["language"],
        organization_id=r["org_id"],
        location_id=r["location_id"] or None,
    )
    template = (
        None
        if r["deleted"]
        else MessageTemplate(
            key=key, body=r["body"], subject=r["subject"], html_body=r["html_body"]
        )
    )
    return TemplateVersion(
        id=r["id"],
        key=key,
        version=r["version"],
        deleted=r["deleted"],
        updated_by=r["updated_by"],
        created_at=r["created_at"],
        template=template,
    )


def _key_columns(key: TemplateKey) -> dict[str, str | None]:
    """The key as `message_template` stores it (an organization default under `ORG_DEFAULT`)."""
    return {
        "org_id": key.organization_id,
        "location_id": key.location_id or ORG_DEFAULT,
        "kind": key.kind.value,
        "channel": key.channel.value,
        "language": key.language,
    }


def _key_filter(key: TemplateKey) -> list[ColumnElement[bool]]:
    return [message_template.c[name] == value for name, value in _key_columns(key).items()]


class Templates:
    """Saved template versions; implements the catalog's `SavedTemplates` port."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def current(self, key: TemplateKey) -> MessageTemplate | None:
        """The latest version of this key, unless it was reverted to the default."""
        latest = await self.latest(key)
        return latest.template if latest is not None else None

    async def latest(self, key: TemplateKey) -> TemplateVersion | None:
        row = (
            await self._session.execute(
                select(message_template)
                .where(*_key_filter(key))
                .order_by(message_template.c.version.desc())
                .limit(1)
            )
        ).first()
        return _version(row) if row is not None else None

    async def versions(self, key: TemplateKey) -> list[TemplateVersion]:
        """Every version of this key, newest first."""
        rows = await self._session.execute(
            select(message_template)
            .where(*_key_filter(key))
            .order_by(message_template.c.version.desc())
        )
        return [_version(row) for row in rows]

    async def current_of_org(self, org_id: str, location_id: str | None) -> list[TemplateVersion]:
        """The latest version of every key saved for the organization default and, when
        given, for one location (reverted keys included: the caller skips them)."""
        scopes = [ORG_DEFAULT] if location_id is None else [ORG_DEFAULT, location_id]
        t = message_template.c
        key = (t.location_id, t.kind, t.channel, t.language)
        latest = (
            select(*key, func.max(t.version).label("version"))
            .where(t.org_id == org_id, t.location_id.in_(scopes))
            .group_by(*key)
            .subquery()
        )
        rows = await self._session.execute(
            select(message_template).join(
                latest,
                and_(
                    t.org_id == org_id,
                    *(column == latest.c[column.name] for column in key),
                    t.version == latest.c.version,
                ),
            )
        )
        return [_version(row) for row in rows]

    async def add_version(
        self,
        key: TemplateKey,
        template: MessageTemplate | None,
        *,
        updated_by: str,
        now: datetime,
    ) -> TemplateVersion:
        """Append a version (`template=None`: revert to the default). Concurrent saves of
        one key are serialized, so versions stay gapless and unique."""
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": "messaging-template:" + ":".join(map(str, _key_columns(key).values()))},
        )
        latest = await self.latest(key)
        version = TemplateVersion(
            id=str(uuid.uuid4()),
            key=key,
            version=(latest.version if latest is not None else 0) + 1,
            deleted=template is None,
            updated_by=updated_by,
            created_at=now,
            template=template,
        )
        await self._session.execute(
            insert(message_template).values(
                id=version.id,
                **_key_columns(key),
                version=version.version,
                deleted=version.deleted,
                subject=template.subject if template is not None else None,
                body=template.body if template is not None else None,
                html_body=template.html_body if template is not None else None,
                updated_by=updated_by,
                created_at=now,
            )
        )
        return version


@dataclass(frozen=True)
class InboxItem:
    id: str
    message_id: str
    org_id: str
    patient_id: str
    location_id: str | None
    sender_name: str
    subject: str | None
    body: str
    delivered_at: datetime
    read_at: datetime | None
    sensitive_location: bool = False


class Inbox:
    """The portal inbox. Content is sealed on the way in and opened on the way out, in the
    caller's transaction (the port reads its data keys there)."""

    def __init__(self, session: AsyncSession, cipher: InboxCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def deliver(
        self,
        *,
        message_id: str,
        sender_name: str,
        subject: str | None,
        body: str,
        now: datetime,
    ) -> str | None:
        """Store a message in its patient's inbox; returns the item id (the existing one
        when the message was delivered before), or None for an unknown message."""
        existing = await self._session.scalar(
            select(inbox_item.c.id).where(inbox_item.c.message_id == message_id)
        )
        if existing is not None:
            return str(existing)
        owner = (
            await self._session.execute(
                select(
                    message.c.org_id,
                    message.c.patient_id,
                    message.c.location_id,
                    message.c.sensitive_location,
                ).where(message.c.id == message_id)
            )
        ).first()
        if owner is None:
            return None
        item_id = f"inbox-{uuid.uuid4().hex}"
        sealed = {
            column.column: (
                None
                if value is None
                else await self._cipher.seal(
                    self._session, owner.org_id, item_id, column.context_column, value
                )
            )
            for column, value in zip(INBOX_COLUMNS, (subject, body), strict=True)
        }
        inserted = await self._session.scalar(
            insert(inbox_item)
            .values(
                id=item_id,
                message_id=message_id,
                # The item is filed where its message was: tenant, patient and location.
                **owner._mapping,
                sender_name=sender_name,
                **sealed,
                delivered_at=now,
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(inbox_item.c.id)
        )
        if inserted is not None:
            return str(inserted)
        # A concurrent delivery of the same message won the insert.
        return await self._session.scalar(
            select(inbox_item.c.id).where(inbox_item.c.message_id == message_id)
        )

    async def of_patient(
        self,
        org_id: str,
        patient_id: str,
        *,
        limit: int,
        locations: tuple[str, ...] | None = None,
        sensitive_seen_at: tuple[str, ...] | None = None,
    ) -> list[InboxItem]:
        """A patient's items, newest first (`locations`: only items of these locations;
        `sensitive_seen_at`: items of sensitive locations only at these)."""
        query = select(inbox_item).where(
            inbox_item.c.org_id == org_id, inbox_item.c.patient_id == patient_id
        )
        if locations is not None:
            query = query.where(inbox_item.c.location_id.in_(locations))
        if sensitive_seen_at is not None:
            query = query.where(
                ~inbox_item.c.sensitive_location | inbox_item.c.location_id.in_(sensitive_seen_at)
            )
        rows = await self._session.execute(
            query.order_by(inbox_item.c.delivered_at.desc(), inbox_item.c.id.desc()).limit(limit)
        )
        return [await self._item(row) for row in rows]

    async def get(self, org_id: str, item_id: str) -> InboxItem | None:
        row = (
            await self._session.execute(
                select(inbox_item).where(inbox_item.c.org_id == org_id, inbox_item.c.id == item_id)
            )
        ).first()
        return await self._item(row) if row is not None else None

    async def mark_read(self, item_id: str, now: datetime) -> None:
        """First read only: a later read keeps when the patient first opened it."""
        await self._session.execute(
            update(inbox_item)
            .where(inbox_item.c.id == item_id, inbox_item.c.read_at.is_(None))
            .values(read_at=now)
        )

    async def _item(self, row: object) -> InboxItem:
        r = row._mapping  # type: ignore[attr-defined]
        opened = {
            column.context_column: (
                None
                if r[column.column] is None
                else await self._cipher.open(
                    self._session, r["org_id"], r["id"], column.context_column, r[column.column]
                )
            )
            for column in INBOX_COLUMNS
        }
        return record_of(InboxItem, {**r, **opened})
