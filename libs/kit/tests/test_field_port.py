"""The kit's field-encryption port: its ciphertext formats, and the rule that services seal
and open fields only through it (never AES-GCM, HKDF or the kit's raw field functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from careloop_kit.crypto import FieldContext, encrypt_field
from careloop_kit.fields import DataKey, DecryptionFailed, FieldCipher, LegacyKey

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
KEY = DataKey("dek-1", bytes(range(32)))
WHERE = {"org_id": "org-1", "table": "message", "column": "recipient", "row_id": "row-1"}

FORBIDDEN_MODULES = (
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.kdf",
    "cryptography.hazmat.primitives.hmac",
)
FORBIDDEN_NAMES = {"AESGCM", "HKDF", "encrypt_field", "decrypt_field", "FieldContext"}

NOT_YET_ON_THE_PORT: dict[str, str] = {}
"""Modules known to seal fields by hand, and why each is still here: the list only shrinks."""


def violations(source: str) -> list[str]:
    """The crypto primitives a module imports that only the kit's port may use."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(FORBIDDEN_MODULES):
                found.append(node.module)
            found.extend(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name in FORBIDDEN_NAMES
                and node.module.startswith(("cryptography", "careloop_kit"))
            )
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith(FORBIDDEN_MODULES))
    return found


def service_modules() -> list[Path]:
    return sorted(
        path
        for path in (ROOT / "services").glob("*/careloop_*/**/*.py")
        if "migrations" not in path.parts
    )


def test_no_service_module_seals_fields_by_hand() -> None:
    modules = service_modules()
    assert len(modules) > 50  # the walk found the services
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in modules
        if (found := violations(path.read_text()))
    }
    assert set(offenders) <= set(NOT_YET_ON_THE_PORT), offenders


def test_the_rule_catches_a_planted_primitive() -> None:
    assert violations("from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n")
    assert violations("from cryptography.hazmat.primitives.kdf.hkdf import HKDF\n")
    assert violations("from careloop_kit.crypto import decrypt_field\n")
    assert violations("import cryptography.hazmat.primitives.ciphers\n")
    # Signatures are not field encryption: identity verifies Ed25519 assertions.
    assert not violations("from cryptography.hazmat.primitives.asymmetric import ed25519\n")
    assert not violations("from careloop_kit.fields import FieldCipher\n")


def test_seal_binds_the_field_and_its_key() -> None:
    sealed = FieldCipher.seal(KEY, "+15550100", **WHERE)

    assert b"5550100" not in sealed
    assert FieldCipher.open(KEY, sealed, **WHERE) == "+15550100"
    with pytest.raises(DecryptionFailed):
        FieldCipher.open(KEY, sealed, **(WHERE | {"row_id": "row-2"}))
    with pytest.raises(DecryptionFailed):
        FieldCipher.open(DataKey("dek-2", KEY.key), sealed, **WHERE)


async def test_a_legacy_ciphertext_opens_only_with_the_legacy_key() -> None:
    legacy_key = bytes(range(1, 33))
    blob = encrypt_field(
        legacy_key, "old value", FieldContext("org-1", "message", "recipient", "row-1", "v1")
    )
    assert FieldCipher.is_legacy(blob)
    with_legacy = FieldCipher(None, None, legacy=LegacyKey(legacy_key, "v1"))  # type: ignore[arg-type]
    without = FieldCipher(None, None)  # type: ignore[arg-type]

    assert await with_legacy.open_field(None, blob, **WHERE) == "old value"  # type: ignore[arg-type]
    with pytest.raises(DecryptionFailed):
        await without.open_field(None, blob, **WHERE)  # type: ignore[arg-type]


class _OneKeyCipher(FieldCipher):
    """The port's format with one data key in memory (Vault and the key table are what
    the services' own tests cover)."""

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]

    async def _current_key(self, session: object, org_id: str) -> DataKey:  # type: ignore[override]
        return KEY

    async def data_key(self, session: object, dek_id: str) -> DataKey:  # type: ignore[override]
        assert dek_id == KEY.dek_id
        return KEY


async def test_binary_content_is_sealed_in_the_same_format_as_text() -> None:
    cipher = _OneKeyCipher()
    document = bytes(range(256)) * 4  # not UTF-8: a document, not a field
    sealed = await cipher.seal_bytes(None, document, **WHERE)  # type: ignore[arg-type]

    assert document not in sealed
    assert await cipher.open_bytes(None, sealed, **WHERE) == document  # type: ignore[arg-type]
    with pytest.raises(DecryptionFailed):
        await cipher.open_bytes(None, sealed, **(WHERE | {"column": "other"}))  # type: ignore[arg-type]
    text = await cipher.seal_field(None, "+15550100", **WHERE)  # type: ignore[arg-type]
    assert text[:1] == sealed[:1]
    assert await cipher.open_bytes(None, text, **WHERE) == b"+15550100"  # type: ignore[arg-type]
