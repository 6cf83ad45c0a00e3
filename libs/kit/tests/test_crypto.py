from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careloop_kit.clock import FrozenClock
from careloop_kit.crypto import (
    BlindIndexer,
    DataKeyCache,
    DecryptionFailed,
    FieldContext,
    decrypt_field,
    encrypt_field,
)

pytestmark = pytest.mark.unit

KEY = bytes(range(32))
CONTEXT = FieldContext("org-1", "patient", "name", "row-1", "dek-1")


def test_round_trip_and_random_nonce() -> None:
    first = encrypt_field(KEY, "Ana García", CONTEXT)
    second = encrypt_field(KEY, "Ana García", CONTEXT)

    assert first != second
    assert decrypt_field(KEY, first, CONTEXT) == "Ana García"
    assert b"Ana" not in first


@pytest.mark.parametrize(
    "moved",
    [
        FieldContext("org-2", "patient", "name", "row-1", "dek-1"),
        FieldContext("org-1", "patient", "name", "row-2", "dek-1"),
        FieldContext("org-1", "patient", "emails", "row-1", "dek-1"),
        FieldContext("org-1", "other", "name", "row-1", "dek-1"),
        FieldContext("org-1", "patient", "name", "row-1", "dek-2"),
    ],
)
def test_ciphertext_moved_to_another_tenant_row_or_column_does_not_decrypt(
    moved: FieldContext,
) -> None:
    blob = encrypt_field(KEY, "1980-04-02", CONTEXT)

    with pytest.raises(DecryptionFailed):
        decrypt_field(KEY, blob, moved)


@given(position=st.integers(min_value=0, max_value=60), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_an_integrity_error(position: int, bit: int) -> None:
    blob = bytearray(encrypt_field(KEY, "+15552013344 and more", CONTEXT))
    blob[position % len(blob)] ^= 1 << bit

    with pytest.raises(DecryptionFailed):
        decrypt_field(KEY, bytes(blob), CONTEXT)


def test_wrong_key_fails() -> None:
    blob = encrypt_field(KEY, "x", CONTEXT)

    with pytest.raises(DecryptionFailed):
        decrypt_field(os.urandom(32), blob, CONTEXT)


def test_blind_index_is_deterministic_per_tenant_and_column() -> None:
    indexer = BlindIndexer(b"m" * 32)

    token = indexer.token("phone", "org-1", "+15552013344")

    assert token == indexer.token("phone", "org-1", "+15552013344")
    assert token != indexer.token("phone", "org-2", "+15552013344")
    assert token != indexer.token("email", "org-1", "+15552013344")
    assert token != BlindIndexer(b"n" * 32).token("phone", "org-1", "+15552013344")
    assert len(token) == 32


def test_short_master_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        BlindIndexer(b"short")


def test_data_key_cache_expires_and_caps() -> None:
    clock = FrozenClock()
    cache = DataKeyCache(ttl=timedelta(minutes=5), max_entries=2, clock=clock)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.put("c", b"3")

    assert cache.get("a") is None
    assert cache.get("b") == b"2"
    clock.advance(timedelta(minutes=5))
    assert cache.get("b") is None
