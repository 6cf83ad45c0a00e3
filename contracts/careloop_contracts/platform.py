"""The platform's shared layout that is not an event: which services exist, who issues
access tokens, what each service may ask of Vault and of the other services.

These lists hold for the whole platform, so they live here, once, next to the topic
catalogue: the kit reads them (it provisions Vault and checks service tokens) but names
no service itself, and a new service is added here, not in the kit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

SERVICES: Final[tuple[str, ...]] = (
    "gateway",
    "identity",
    "patients",
    "scheduling",
    "messaging",
    "audit",
    "referrals",
    "tasks",
    "caregaps",
)
"""Every Careloop service; each has its own Vault identity, policy and token."""

TOKEN_ISSUER: Final = "careloop-identity"  # noqa: S105 - an issuer name, not a secret
"""The `iss` of every access token: identity issues them, every service verifies them."""

# ------------------------------------------------------------------------------ vault

PHI_KEY: Final = "careloop-phi"
"""Transit key (aes256-gcm96) that wraps the data keys of PHI at rest."""
IDENTITY_FIELDS_KEY: Final = "careloop-identity-fields"
"""Transit key (aes256-gcm96) that wraps identity's data keys (TOTP secrets, break-glass
reasons)."""
MESSAGING_FIELDS_KEY: Final = "careloop-messaging-fields"
"""Transit key (aes256-gcm96) that wraps messaging's data keys (recipient addresses, portal
inbox items)."""
REFERRALS_FIELDS_KEY: Final = "careloop-referrals-fields"
"""Transit key (aes256-gcm96) that wraps referrals' data keys (reasons for referral and
for each transition)."""
TASKS_FIELDS_KEY: Final = "careloop-tasks-fields"
"""Transit key (aes256-gcm96) that wraps tasks' data keys (comments and notes on tasks)."""
CAREGAPS_FIELDS_KEY: Final = "careloop-caregaps-fields"
"""Transit key (aes256-gcm96) that wraps care-gaps' data keys (the demographics and
clinical facts its evaluation reads, the evidence of each gap)."""
AUDIT_CHECKPOINT_KEY: Final = "careloop-audit-checkpoint"
"""Transit key (ed25519) that signs checkpoints of the audit hash chain."""
IDENTITY_SIGNING_KEY: Final = "careloop-identity-signing"
"""Transit key (ed25519) that signs access tokens; its public keys are the JWKS."""
SERVICE_KEY_PREFIX: Final = "careloop-service-"
"""Transit keys (ed25519) that prove a service's identity: ``careloop-service-<name>``."""

TRANSIT_KEYS: Final[tuple[tuple[str, str], ...]] = (
    (PHI_KEY, "aes256-gcm96"),
    (IDENTITY_FIELDS_KEY, "aes256-gcm96"),
    (MESSAGING_FIELDS_KEY, "aes256-gcm96"),
    (REFERRALS_FIELDS_KEY, "aes256-gcm96"),
    (TASKS_FIELDS_KEY, "aes256-gcm96"),
    (CAREGAPS_FIELDS_KEY, "aes256-gcm96"),
    (AUDIT_CHECKPOINT_KEY, "ed25519"),
    (IDENTITY_SIGNING_KEY, "ed25519"),
)
"""Shared transit keys, as ``(name, type)``: created once, never replaced."""

BLIND_INDEX_PATH: Final = "careloop/patients/blind-index"
TOTP_KEY_PATH: Final = "careloop/identity/totp-key"
RECIPIENT_KEY_PATH: Final = "careloop/messaging/recipient-key"
LINK_KEY_PATH: Final = "careloop/messaging/link-key"
KV_KEYS: Final[tuple[str, ...]] = (
    BLIND_INDEX_PATH,
    TOTP_KEY_PATH,
    RECIPIENT_KEY_PATH,
    LINK_KEY_PATH,
)
"""KV v2 secrets (field ``key``: 32 random bytes, base64), each under its service's own
``careloop/<service>/`` space, created once and never overwritten."""

Capability = Literal["create", "read", "update", "delete", "list", "sudo"]


@dataclass(frozen=True, slots=True)
class VaultGrant:
    """One path a service's Vault policy opens, beyond its own KV space and identity key."""

    path: str
    capabilities: tuple[Capability, ...]
    why: str
    """Why the service needs it; becomes the comment above the path in the policy."""


def _transit(key: str, why: str, *operations: str) -> tuple[VaultGrant, ...]:
    grants = [VaultGrant(f"transit/{op}/{key}", ("update",), why) for op in operations]
    grants.append(VaultGrant(f"transit/keys/{key}", ("read",), why))
    return tuple(grants)


VAULT_GRANTS: Final[Mapping[str, tuple[VaultGrant, ...]]] = MappingProxyType(
    {
        "patients": _transit(
            PHI_KEY,
            "Envelope encryption of PHI: fresh data keys, unwrap, and rewrap after key rotation.",
            "datakey/plaintext",
            "decrypt",
            "rewrap",
        ),
        "audit": _transit(
            AUDIT_CHECKPOINT_KEY, "Signed checkpoints of the hash chain.", "sign", "verify"
        ),
        "identity": (
            *_transit(
                IDENTITY_FIELDS_KEY,
                "Envelope encryption of TOTP secrets and break-glass reasons: fresh data "
                "keys, unwrap, and rewrap after key rotation.",
                "datakey/plaintext",
                "decrypt",
                "rewrap",
            ),
            *_transit(
                IDENTITY_SIGNING_KEY,
                "Access tokens: sign with the identity key and publish its public keys "
                "(JWKS). Rotating the key is an operator's action, not the service's.",
                "sign",
            ),
            VaultGrant(
                f"transit/keys/{SERVICE_KEY_PREFIX}*",
                ("read",),
                "Service identities: identity checks every service's assertion against "
                "that service's public keys, so it reads them all; it signs with none of "
                "them (the glob covers reads only, and a transit key's read shows public "
                "keys, never private ones).",
            ),
        ),
        "messaging": _transit(
            MESSAGING_FIELDS_KEY,
            "Envelope encryption of recipient addresses and portal inbox items: fresh data "
            "keys, unwrap, and rewrap after key rotation.",
            "datakey/plaintext",
            "decrypt",
            "rewrap",
        ),
        "referrals": _transit(
            REFERRALS_FIELDS_KEY,
            "Envelope encryption of reasons for referral and transition reasons: fresh "
            "data keys, unwrap, and rewrap after key rotation.",
            "datakey/plaintext",
            "decrypt",
            "rewrap",
        ),
        "tasks": _transit(
            TASKS_FIELDS_KEY,
            "Envelope encryption of comments and notes on tasks: fresh data keys, unwrap, "
            "and rewrap after key rotation.",
            "datakey/plaintext",
            "decrypt",
            "rewrap",
        ),
        "caregaps": _transit(
            CAREGAPS_FIELDS_KEY,
            "Envelope encryption of the demographics and facts gaps are evaluated from and "
            "of each gap's evidence: fresh data keys, unwrap, and rewrap after key rotation.",
            "datakey/plaintext",
            "decrypt",
            "rewrap",
        ),
    }
)
"""Per-service additions to the policy every service gets."""

# ------------------------------------------------------------------ service identities

SERVICE_GRANTS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {
        # Delivering a reminder needs the address it goes to and the patient's channel
        # choices; nothing clinical, nothing demographic.
        "messaging": MappingProxyType({"patients:read": frozenset({"contact", "preferences"})}),
        # A measure's population is set by age and sex: care-gaps reads the birth date and
        # sex of a patient when a registration or a change of them arrives; no contact
        # data (outreach goes through messaging), and the facts travel as events.
        "caregaps": MappingProxyType({"patients:read": frozenset({"demographics"})}),
    }
)
"""What a service may do when it calls another one with its own service identity
(token `act: service`, `sub: service:<name>`): service -> permission -> PHI categories.
Each line must be justified by a call the architecture allows; the kit's permission
table checks every permission and category named here."""
