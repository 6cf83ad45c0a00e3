"""Versioned blind-index and signing keys: what rotation relies on."""

from __future__ import annotations

import base64

import pytest

from careloop_kit.crypto import BlindIndexer, MessageSigner

pytestmark = pytest.mark.unit

OLD = bytes(range(32))
NEW = bytes(range(32, 64))


def test_blind_index_writes_under_the_current_version_and_looks_up_under_all() -> None:
    before = BlindIndexer(OLD)
    during = BlindIndexer(NEW, version=2, previous={1: OLD})

    assert during.token("email", "org-1", "a@example.org") != before.token(
        "email", "org-1", "a@example.org"
    )
    assert during.tokens("email", "org-1", "a@example.org") == {
        2: BlindIndexer(NEW, version=2).token("email", "org-1", "a@example.org"),
        1: before.token("email", "org-1", "a@example.org"),
    }
    assert list(during.tokens("email", "org-1", "a@example.org")) == [2, 1]


def test_blind_index_from_the_secret() -> None:
    plain = BlindIndexer.from_secret({"key": base64.b64encode(OLD).decode()})
    rotated = BlindIndexer.from_secret(
        {
            "key": base64.b64encode(NEW).decode(),
            "version": "2",
            "previous_key": base64.b64encode(OLD).decode(),
        }
    )

    assert plain.versions == (1,)
    assert rotated.versions == (2, 1)
    assert rotated.tokens("phone", "org-1", "+15550100")[1] == plain.token(
        "phone", "org-1", "+15550100"
    )
    with pytest.raises(ValueError, match="given twice"):
        BlindIndexer(NEW, version=1, previous={1: OLD})
    with pytest.raises(ValueError, match="32 bytes"):
        BlindIndexer(NEW, version=2, previous={1: b"short"})


def test_signer_accepts_previous_keys_until_they_are_dropped() -> None:
    old = MessageSigner(OLD, label="test-link", tag_bytes=12)
    rotated = MessageSigner(NEW, label="test-link", previous=[OLD], tag_bytes=12)
    retired = MessageSigner(NEW, label="test-link", tag_bytes=12)
    tag = old.sign(b"m-1")

    assert len(tag) == 12
    assert rotated.sign(b"m-1") == retired.sign(b"m-1") != tag
    assert rotated.verify(b"m-1", tag)
    assert not retired.verify(b"m-1", tag)
    assert not rotated.verify(b"m-2", tag)
    # A label keeps two uses of one master key apart.
    assert MessageSigner(OLD, label="other", tag_bytes=12).sign(b"m-1") != tag
