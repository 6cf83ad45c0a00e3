"""Rotating the secure-link key: new links are signed with the new key, links already
sent keep working while the old key is held as `previous`, and stop once it is retired."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from careloop_messaging.store.repository import SecureLinks

pytestmark = pytest.mark.unit

OLD = bytes(range(32))
NEW = bytes(range(64, 96))
BASE = "https://portal.example.org/l"


def test_links_signed_before_the_rotation_verify_until_the_old_key_is_retired() -> None:
    message_id = str(uuid.uuid4())
    before = SecureLinks(OLD, BASE)
    sent = before.token(message_id)

    during = SecureLinks(NEW, BASE, previous=[OLD])
    after = SecureLinks(NEW, BASE)

    fresh = during.token(message_id)
    assert fresh != sent  # new links are signed with the new key only
    assert fresh == after.token(message_id)
    assert during.message_id(sent) == message_id
    assert during.message_id(fresh) == message_id
    assert after.message_id(fresh) == message_id
    assert after.message_id(sent) is None  # retired: the old links stop working
    assert before.message_id(fresh) is None


def test_the_token_format_is_unchanged_so_links_already_sent_keep_verifying() -> None:
    # The MAC as it was computed before the kit's signer: HKDF label, then HMAC-SHA256.
    message_id = str(uuid.uuid4())
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"messaging:secure-link").derive(OLD)
    mac = hmac.new(key, b"careloop-link-v1:" + message_id.encode(), hashlib.sha256).digest()
    raw = b"\x01" + uuid.UUID(message_id).bytes + mac[:12]
    expected = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    assert SecureLinks(OLD, BASE).token(message_id) == expected
    assert SecureLinks(NEW, BASE, previous=[OLD]).message_id(expected) == message_id
