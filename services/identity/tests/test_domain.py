"""Pure identity logic: TOTP, password policy, lockout, session limits, token shapes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from careloop_identity.domain.locations import InvalidTimeZone, validate_time_zone
from careloop_identity.domain.lockout import CLEAN, FailureState, LockoutPolicy, after_failure
from careloop_identity.domain.password import WeakPassword, check_password
from careloop_identity.domain.roles import InvalidAssignment, make_assignment
from careloop_identity.domain.session import SessionLimits, SessionState, refusal
from careloop_identity.domain.tokens import (
    AccessGrant,
    claims_for,
    compact_jws,
    jwks_from_transit,
    signing_input,
    vault_signature_bytes,
)
from careloop_kit.auth import totp

pytestmark = pytest.mark.unit

RFC_SECRET = b"12345678901234567890"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --- TOTP (RFC 6238 appendix B, SHA-1) -------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_the_rfc_6238_vectors(seconds: int, eight_digits: str) -> None:
    assert totp.totp(RFC_SECRET, at(seconds), digits=8) == eight_digits
    assert totp.totp(RFC_SECRET, at(seconds)) == eight_digits[-6:]


def test_totp_accepts_one_step_of_drift_either_side_and_no_more() -> None:
    now = at(1234567890)
    code_now = totp.totp(RFC_SECRET, now)
    assert totp.verify(RFC_SECRET, code_now, now) == totp.step_at(now)
    assert totp.verify(RFC_SECRET, totp.totp(RFC_SECRET, now - timedelta(seconds=30)), now)
    assert totp.verify(RFC_SECRET, totp.totp(RFC_SECRET, now + timedelta(seconds=30)), now)
    assert totp.verify(RFC_SECRET, totp.totp(RFC_SECRET, now - timedelta(seconds=90)), now) is None
    assert totp.verify(RFC_SECRET, "12345", now) is None
    assert totp.verify(RFC_SECRET, "abcdef", now) is None


def test_a_totp_code_works_only_once() -> None:
    now = at(1234567890)
    code = totp.totp(RFC_SECRET, now)
    step = totp.verify(RFC_SECRET, code, now)
    assert step is not None
    assert totp.verify(RFC_SECRET, code, now, last_used_step=step) is None


def test_totp_secret_round_trips_through_base32_and_the_uri() -> None:
    secret = totp.new_secret()
    assert totp.from_base32(totp.to_base32(secret)) == secret
    uri = totp.provisioning_uri(secret, account="a@example.org", issuer="Careloop")
    assert uri.startswith("otpauth://totp/Careloop:a@example.org?")
    assert f"secret={totp.to_base32(secret)}" in uri
    assert "period=30" in uri
    assert "digits=6" in uri


# --- passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["Short1!", "alllowercaseletters", "123456789012345", "ALLUPPERCASEONLY"],
)
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(WeakPassword):
        check_password(password, email="someone@example.org")


def test_the_email_is_not_a_password() -> None:
    with pytest.raises(WeakPassword, match="email"):
        check_password("Someone@Example.org", email="someone@example.org")


def test_a_long_mixed_password_passes() -> None:
    check_password("correct horse battery 9", email="someone@example.org")


# --- lockout ---------------------------------------------------------------------------


def test_the_fifth_consecutive_failure_locks_for_fifteen_minutes() -> None:
    policy = LockoutPolicy(threshold=5, duration=timedelta(minutes=15))
    now = at(1_000_000)
    state = CLEAN
    for _ in range(4):
        state = after_failure(state, now, policy)
        assert not state.locked_at(now)
    state = after_failure(state, now, policy)
    assert state.locked_at(now)
    assert state.retry_after_s(now) == 900
    assert state.locked_at(now + timedelta(minutes=14, seconds=59))
    assert not state.locked_at(now + timedelta(minutes=15))
    assert state.failed_attempts == 0  # a fresh count once the lock ends


def test_retry_after_counts_down() -> None:
    state = FailureState(0, at(1000))
    assert state.retry_after_s(at(400)) == 600


# --- sessions --------------------------------------------------------------------------


def test_session_limits() -> None:
    limits = SessionLimits(idle=timedelta(minutes=30), absolute=timedelta(hours=12))
    start = at(1_000_000)
    fresh = SessionState(start, start, None)
    assert refusal(fresh, start + timedelta(minutes=29), limits) is None
    assert refusal(fresh, start + timedelta(minutes=31), limits) == "idle"
    busy = SessionState(start, start + timedelta(hours=12), None)
    assert refusal(busy, start + timedelta(hours=12, seconds=1), limits) == "absolute"
    ended = SessionState(start, start, start)
    assert refusal(ended, start, limits) == "revoked"


# --- roles -----------------------------------------------------------------------------


def test_roles_and_scopes() -> None:
    staff = make_assignment(["provider", "provider", "front_desk"], ["b", "a"], None)
    assert staff.roles == ("front_desk", "provider")
    assert staff.locations == ("a", "b")
    assert staff.requires_mfa
    assert staff.actor_type == "user"
    assert not make_assignment(["billing"], "*", None).requires_mfa
    portal = make_assignment(["patient"], "*", "pat-1")
    assert portal.actor_type == "patient"
    for roles, locations, patient in [
        (["patient"], "*", None),
        (["patient", "provider"], "*", "pat-1"),
        (["provider"], "*", "pat-1"),
        (["janitor"], "*", None),
        (["provider"], "all", None),
        (["provider"], ["*", "a"], None),
    ]:
        with pytest.raises(InvalidAssignment):
            make_assignment(roles, locations, patient)


def test_time_zones_are_iana_names() -> None:
    assert validate_time_zone("America/Chicago") == "America/Chicago"
    for bad in ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"]:
        with pytest.raises(InvalidTimeZone):
            validate_time_zone(bad)


# --- token shapes ----------------------------------------------------------------------


def test_a_token_assembled_from_a_transit_style_signature_verifies_with_pyjwt() -> None:
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    now = datetime.now(UTC)
    grant = AccessGrant(
        user_id="u1",
        org_id="o1",
        session_id="s1",
        actor_type="user",
        roles=("provider",),
        locations=("*",),
        patient_id=None,
        amr=("pwd",),
    )
    claims = claims_for(
        grant, issuer="careloop-identity", now=now, ttl=timedelta(minutes=5), jti="j1"
    )
    text = signing_input("careloop-identity-signing:3", claims)
    vault_signature = "vault:v3:" + base64.b64encode(private.sign(text.encode())).decode()
    token = compact_jws(text, vault_signature_bytes(vault_signature))
    jwks = jwks_from_transit(
        "careloop-identity-signing",
        {
            "min_decryption_version": 2,
            "keys": {
                "1": {"public_key": base64.b64encode(b"\x01" * 32).decode()},
                "3": {"public_key": base64.b64encode(raw_public).decode()},
                "2": {"public_key": base64.b64encode(b"\x02" * 32).decode()},
            },
        },
    )
    assert [k["kid"] for k in jwks["keys"]] == [
        "careloop-identity-signing:2",
        "careloop-identity-signing:3",
    ]
    assert jwt.get_unverified_header(token) == {
        "alg": "EdDSA",
        "typ": "at+jwt",
        "kid": "careloop-identity-signing:3",
    }
    decoded = jwt.decode(
        token,
        jwt.PyJWK(jwks["keys"][1]),
        algorithms=["EdDSA"],
        audience="careloop",
        issuer="careloop-identity",
    )
    assert decoded["sub"] == "u1"
    assert decoded["exp"] - decoded["iat"] == 300
    assert "pat" not in decoded


def test_the_role_schema_lists_exactly_the_permission_tables_roles() -> None:
    from typing import get_args

    from careloop_identity.api.schemas import Role
    from careloop_kit.auth.permissions import ROLES

    assert set(get_args(Role)) == set(ROLES)
