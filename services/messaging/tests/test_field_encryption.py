"""Messaging's sealed fields (recipient addresses, portal inbox items) go through the kit's
port: envelope encryption under messaging's transit key. Ciphertexts from before the port
(under keys derived from the recipient secret) stay readable and are moved onto it by
`careloop keys rewrap messaging`, which also rewraps every data key after a rotation, so
the old transit versions can be retired. The blind index of addresses is unchanged by the
move, so opt-outs recorded before it still match."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import hvac
import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

import careloop_messaging
from careloop_cli.main import app as cli
from careloop_contracts.platform import MESSAGING_FIELDS_KEY
from careloop_kit.crypto import FieldContext, encrypt_field
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.vault import Vault, VaultUnavailable
from careloop_messaging.domain.outreach import MessageStatus, Recipient
from careloop_messaging.domain.templates import Channel
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import (
    LEGACY_INBOX_KEY_ID,
    LEGACY_RECIPIENT_KEY_ID,
    Inbox,
    InboxCipher,
    Messages,
    NewMessage,
    RecipientCipher,
    field_ciphers,
)
from careloop_messaging.store.tables import field_key, inbox_item, message

pytestmark = pytest.mark.service

MIGRATIONS = Path(careloop_messaging.__file__).parent / "migrations"
SUBJECT = "Your visit with Dr. Okafor"
BODY = "Bayview Family Practice: reminder of your appointment on Tue Mar 4 at 9:30 AM."


def _old_key(master: bytes, label: bytes) -> bytes:
    """A key as messaging derived it before the kit's port and the kit's `derive_key`."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=label).derive(master)


def test_the_blind_index_is_unchanged_so_opt_outs_made_before_still_match() -> None:
    # The tokens as computed before the port: the index master key under its own label,
    # then the kit's per-column key, then HMAC-SHA256 truncated to 16 bytes.
    master = bytes(range(32))
    index_master = _old_key(master, b"messaging:recipient-index")

    def old_token(column: str, org_id: str, address: str) -> str:
        key = _old_key(index_master, f"blind-index:{column}".encode())
        return hmac.new(key, f"{org_id}\x1f{address}".encode(), hashlib.sha256).digest()[:16].hex()

    # Indexing calls no Vault: a client that reaches nothing will do.
    recipients, _ = field_ciphers(Vault("http://127.0.0.1:9", "unused"), master)
    sms = Recipient(Channel.SMS, "+15552013344")

    assert recipients.index("org-1", sms) == old_token("recipient:sms", "org-1", sms.address)
    assert recipients.lookup(sms) == old_token("recipient-any:sms", "*", sms.address)


@pytest.fixture
def messaging_key(vault_addr: str, vault_root_token: str) -> Iterator[hvac.Client]:
    """The shared messaging transit key, left accepting every version again afterwards so
    the data keys other tests wrapped stay readable."""
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    yield root
    root.secrets.transit.update_key_configuration(
        name=MESSAGING_FIELDS_KEY, min_decryption_version=1
    )


@pytest.fixture
async def settings(
    make_database: Callable[[str], Awaitable[str]],
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    unique_id: str,
) -> MessagingSettings:
    dsn = await make_database("messaging")
    await upgrade_async(MIGRATIONS, dsn)
    # What an operator provisions: the recipient secret in messaging's own KV space.
    key_path = f"careloop/messaging/recipient-key-{unique_id}"
    hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2.create_or_update_secret(
        path=key_path,
        secret={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        mount_point="secret",
    )
    return MessagingSettings(
        environment="test",
        database_url=dsn,
        vault_addr=vault_addr,
        vault_token=vault_tokens["messaging"],
        recipient_key_secret_path=key_path,
        log_json=False,
    )


@pytest.fixture
async def sessions(settings: MessagingSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def _recipient_key(settings: MessagingSettings) -> bytes:
    secret = await Vault.from_settings(settings).read_secret(settings.recipient_key_secret_path)
    return base64.b64decode(secret["key"])


async def _ciphers(settings: MessagingSettings) -> tuple[RecipientCipher, InboxCipher]:
    """Ports as a fresh process builds them: no data key cached yet."""
    return field_ciphers(Vault.from_settings(settings), await _recipient_key(settings))


@dataclass(frozen=True)
class Stored:
    message_id: str
    item_id: str
    address: str


async def _store(
    sessions: async_sessionmaker[AsyncSession],
    recipients: RecipientCipher,
    inbox: InboxCipher,
    org_id: str,
) -> Stored:
    """A message and its inbox item, sealed through the port as messaging writes them."""
    message_id, address = str(uuid.uuid4()), f"+1555{secrets.randbelow(10**7):07d}"
    async with sessions.begin() as session:
        await Messages(session).add(
            _message(
                message_id,
                org_id,
                address,
                await recipients.seal(session, org_id, message_id, address),
                recipients,
            ),
            now=datetime.now(UTC),
        )
        item_id = await Inbox(session, inbox).deliver(
            message_id=message_id,
            sender_name="Bayview Family Practice",
            subject=SUBJECT,
            body=BODY,
            now=datetime.now(UTC),
        )
    assert item_id is not None
    return Stored(message_id, item_id, address)


async def _store_legacy(
    sessions: async_sessionmaker[AsyncSession],
    recipients: RecipientCipher,
    master: bytes,
    org_id: str,
) -> Stored:
    """A message and its inbox item sealed the old way: each use under its own key derived
    from the recipient secret, written before the port existed."""
    message_id, address = str(uuid.uuid4()), f"+1555{secrets.randbelow(10**7):07d}"
    item_id = f"inbox-{uuid.uuid4().hex}"
    address_key = _old_key(master, b"messaging:recipient-encryption")
    inbox_key = _old_key(master, b"messaging:inbox-content")

    def inbox_field(column: str, value: str) -> bytes:
        where = FieldContext(org_id, "inbox_item", column, item_id, LEGACY_INBOX_KEY_ID)
        return encrypt_field(inbox_key, value, where)

    sealed_address = encrypt_field(
        address_key,
        address,
        FieldContext(org_id, "message", "recipient", message_id, LEGACY_RECIPIENT_KEY_ID),
    )
    async with sessions.begin() as session:
        await Messages(session).add(
            _message(message_id, org_id, address, sealed_address, recipients),
            now=datetime.now(UTC),
        )
        await session.execute(
            insert(inbox_item).values(
                id=item_id,
                message_id=message_id,
                org_id=org_id,
                patient_id="pat-legacy",
                location_id="loc-north",
                sensitive_location=False,
                sender_name="Bayview Family Practice",
                subject_ct=inbox_field("subject", SUBJECT),
                body_ct=inbox_field("body", BODY),
                delivered_at=datetime.now(UTC),
            )
        )
    return Stored(message_id, item_id, address)


def _message(
    message_id: str, org_id: str, address: str, sealed: bytes, recipients: RecipientCipher
) -> NewMessage:
    recipient = Recipient(Channel.SMS, address)
    return NewMessage(
        id=message_id,
        org_id=org_id,
        patient_id="pat-legacy",
        appointment_id=f"appt-{uuid.uuid4().hex[:8]}",
        location_id="loc-north",
        touch_key=f"{message_id}:1_day_before",
        touch="1_day_before",
        language="en",
        practice_name="Bayview Family Practice",
        sensitive_location=False,
        start_at=datetime(2031, 3, 4, 14, 30, tzinfo=UTC),
        time_zone="America/New_York",
        status=MessageStatus.QUEUED,
        channel=Channel.SMS,
        recipient_ct=sealed,
        recipient_index=recipients.index(org_id, recipient),
        recipient_lookup=recipients.lookup(recipient),
    )


async def _raw(
    sessions: async_sessionmaker[AsyncSession], stored: Stored
) -> tuple[bytes, bytes, bytes]:
    """What the database holds for a message and its item: (address, subject, body)."""
    async with sessions() as session:
        address = await session.scalar(
            select(message.c.recipient_ct).where(message.c.id == stored.message_id)
        )
        item = (
            await session.execute(
                select(inbox_item.c.subject_ct, inbox_item.c.body_ct).where(
                    inbox_item.c.id == stored.item_id
                )
            )
        ).one()
    assert address is not None
    assert item.subject_ct is not None
    return bytes(address), bytes(item.subject_ct), bytes(item.body_ct)


async def _assert_readable(
    sessions: async_sessionmaker[AsyncSession],
    ciphers: tuple[RecipientCipher, InboxCipher],
    org_id: str,
    stored: Stored,
) -> None:
    """The delivery worker's and the inbox API's reads both give the plaintext back."""
    recipients, inbox = ciphers
    async with sessions() as session:
        row = await Messages(session).get(stored.message_id)
        assert row is not None
        assert row.recipient_ct is not None
        opened = await recipients.open(session, org_id, row.id, row.recipient_ct)
        item = await Inbox(session, inbox).get(org_id, stored.item_id)
    assert opened == stored.address
    assert item is not None
    assert (item.subject, item.body) == (SUBJECT, BODY)


async def test_rotation_rewrap_and_retirement_keep_every_field_readable(
    settings: MessagingSettings,
    sessions: async_sessionmaker[AsyncSession],
    messaging_key: hvac.Client,
    unique_id: str,
    tmp_path: Path,
) -> None:
    org_id = f"org-{unique_id}"
    recipients, inbox = await _ciphers(settings)
    current = await _store(sessions, recipients, inbox, org_id)
    legacy = await _store_legacy(sessions, recipients, await _recipient_key(settings), org_id)

    # What is stored: ciphertext that names its data key, never the values ...
    for blob in await _raw(sessions, current):
        assert blob[:1] == b"\x02"
    assert current.address.encode() not in (await _raw(sessions, current))[0]
    assert all(BODY.encode() not in blob for blob in await _raw(sessions, current))
    # ... and the rows from before the port are read through it as they are.
    assert [blob[:1] for blob in await _raw(sessions, legacy)] == [b"\x01"] * 3
    for stored in (current, legacy):
        await _assert_readable(sessions, await _ciphers(settings), org_id, stored)
    async with sessions() as session:
        before = list(await session.scalars(select(field_key.c.wrapped)))
    assert before

    # The transit key is rotated; the command rewraps the data keys and moves the rows
    # from before the port onto them.
    messaging_key.secrets.transit.rotate_key(name=MESSAGING_FIELDS_KEY)
    latest = messaging_key.secrets.transit.read_key(name=MESSAGING_FIELDS_KEY)["data"][
        "latest_version"
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")} | {
        "CARELOOP_STATE_DIR": str(tmp_path),
        "CARELOOP_DATABASE_URL": settings.database_url.get_secret_value(),
        "CARELOOP_VAULT_ADDR": settings.vault_addr,
        "CARELOOP_VAULT_TOKEN": settings.vault_token.get_secret_value(),
        "CARELOOP_RECIPIENT_KEY_SECRET_PATH": settings.recipient_key_secret_path,
    }
    run = await asyncio.to_thread(
        CliRunner().invoke, cli, ["keys", "rewrap", "messaging", "--batch-size", "1"], env=env
    )
    assert run.exit_code == 0, run.output
    assert "3 moved onto data keys" in run.output
    async with sessions() as session:
        wrapped = list(await session.scalars(select(field_key.c.wrapped)))
    assert len(wrapped) == len(before)
    assert all(w.startswith(f"vault:v{latest}:") for w in wrapped)
    assert f"{len(wrapped)} rewrapped" in run.output
    assert [blob[:1] for blob in await _raw(sessions, legacy)] == [b"\x02"] * 3

    rerun = await asyncio.to_thread(
        CliRunner().invoke, cli, ["keys", "rewrap", "messaging"], env=env
    )
    assert rerun.exit_code == 0, rerun.output
    assert f"0 rewrapped, {len(wrapped)} already current" in rerun.output
    assert "moved onto data keys" not in rerun.output

    # Older versions retired: the data keys as wrapped before no longer unwrap, and a
    # fresh process still reads every field, the moved ones included.
    messaging_key.secrets.transit.update_key_configuration(
        name=MESSAGING_FIELDS_KEY, min_decryption_version=latest
    )
    with pytest.raises(VaultUnavailable):
        await Vault.from_settings(settings).unwrap_data_key(MESSAGING_FIELDS_KEY, before[0])
    for stored in (current, legacy):
        await _assert_readable(sessions, await _ciphers(settings), org_id, stored)
