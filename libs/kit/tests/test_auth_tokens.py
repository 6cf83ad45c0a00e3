"""THE JWT ATTACK MATRIX: every forged, misdirected, stale or revoked token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from careloop_kit.auth import Claims, InvalidToken, RevokedSessions, StaticJwksSource
from careloop_kit.auth.jwks import b64url_encode, public_jwk
from careloop_kit.auth.testing import OMIT, TestTokenIssuer, encode_segment
from careloop_kit.clock import FrozenClock
from careloop_kit.problems import Unauthorized

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def issuer(clock: FrozenClock) -> TestTokenIssuer:
    return TestTokenIssuer(clock)


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{encode_segment(header)}.{encode_segment(claims)}."


def _hs256(issuer: TestTokenIssuer, secret: bytes) -> str:
    header = issuer.header(alg="HS256")
    signing_input = f"{encode_segment(header)}.{encode_segment(issuer.claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def _public_raw(issuer: TestTokenIssuer) -> bytes:
    return issuer.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_pem(issuer: TestTokenIssuer) -> bytes:
    return issuer.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _rs256(issuer: TestTokenIssuer) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = issuer.header(alg="RS256")
    signing_input = f"{encode_segment(header)}.{encode_segment(issuer.claims())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


def _tampered(issuer: TestTokenIssuer) -> str:
    header_b64, payload_b64, signature_b64 = issuer.mint(roles=["billing"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    claims["roles"] = ["org_admin"]
    return f"{header_b64}.{encode_segment(claims)}.{signature_b64}"


ATTACKER = Ed25519PrivateKey.generate()

ATTACKS: dict[str, Callable[[TestTokenIssuer], str]] = {
    "alg none, unsigned": lambda i: _unsigned(i.header(alg="none"), i.claims()),
    "alg none, signature kept": lambda i: (
        _unsigned(i.header(alg="none"), i.claims()) + i.mint().split(".")[2]
    ),
    "alg None capitalised": lambda i: _unsigned(i.header(alg="None"), i.claims()),
    "HS256 with the raw public key as secret": lambda i: _hs256(i, _public_raw(i)),
    "HS256 with the PEM public key as secret": lambda i: _hs256(i, _public_pem(i)),
    "HS256 with the base64url x as secret": lambda i: _hs256(
        i, b64url_encode(_public_raw(i)).encode()
    ),
    "RS256 from a foreign RSA key": _rs256,
    "ES256 header": lambda i: i.sign(i.header(alg="ES256"), i.claims()),
    "EdDSA by a foreign Ed25519 key, known kid": lambda i: i.sign(i.header(), i.claims(), ATTACKER),
    "jwk header injection": lambda i: i.sign(
        i.header(jwk=public_jwk(ATTACKER.public_key(), i.kid)), i.claims(), ATTACKER
    ),
    "jwk header injection, own kid": lambda i: i.sign(
        i.header(kid="attacker", jwk=public_jwk(ATTACKER.public_key(), "attacker")),
        i.claims(),
        ATTACKER,
    ),
    "jku header injection": lambda i: i.sign(
        i.header(kid="attacker", jku="https://attacker.example/jwks.json"), i.claims(), ATTACKER
    ),
    "jku header on a genuine signature": lambda i: i.sign(
        i.header(jku="https://attacker.example/jwks.json"), i.claims()
    ),
    "x5u header": lambda i: i.sign(i.header(x5u="https://attacker.example/cert.pem"), i.claims()),
    "x5c header": lambda i: i.sign(i.header(x5c=["MIIB..."]), i.claims()),
    "crit header": lambda i: i.sign(i.header(crit=["exp"]), i.claims()),
    "unexpected header": lambda i: i.sign(i.header(cty="JWT"), i.claims()),
    "wrong audience": lambda i: i.mint(aud="other-system"),
    "audience list without careloop": lambda i: i.mint(aud=["a", "b"]),
    "missing audience": lambda i: i.mint(aud=OMIT),
    "wrong issuer": lambda i: i.mint(iss="https://evil.example"),
    "missing issuer": lambda i: i.mint(iss=OMIT),
    "refresh token (typ rt+jwt)": lambda i: i.sign(i.header(typ="rt+jwt"), i.claims()),
    "ID token (typ JWT)": lambda i: i.sign(i.header(typ="JWT"), i.claims()),
    "missing typ": lambda i: i.sign(i.header(typ=OMIT), i.claims()),
    "missing kid": lambda i: i.sign(i.header(kid=OMIT), i.claims()),
    "missing sub": lambda i: i.mint(sub=OMIT),
    "missing org": lambda i: i.mint(org=OMIT),
    "missing sid": lambda i: i.mint(sid=OMIT),
    "missing jti": lambda i: i.mint(jti=OMIT),
    "missing exp": lambda i: i.mint(exp=OMIT),
    "missing roles": lambda i: i.mint(roles=OMIT),
    "roles not a list": lambda i: i.mint(roles="org_admin"),
    "unknown actor type": lambda i: i.mint(act="system"),
    "exp as a string": lambda i: i.mint(exp="9999999999"),
    "exp as a boolean": lambda i: i.mint(exp=True),
    "patient without pat": lambda i: i.mint(act="patient", roles=["patient"]),
    "patient with staff roles": lambda i: i.mint(
        act="patient", roles=["patient", "org_admin"], pat="p-1"
    ),
    "lifetime longer than allowed": lambda i: i.mint(exp=int(i.clock.now().timestamp()) + 86400),
    "tampered payload, signature kept": _tampered,
    "signature of another token": lambda i: ".".join(
        [*i.mint(sub="a").split(".")[:2], i.mint(sub="b").split(".")[2]]
    ),
    "truncated signature": lambda i: i.mint()[:-4],
    "padded base64": lambda i: i.mint().replace(".", "=.", 1),
    "two segments": lambda i: ".".join(i.mint().split(".")[:2]),
    "four segments": lambda i: i.mint() + ".x",
    "JSON array header": lambda i: f"{b64url_encode(b'[]')}.{i.mint().split('.', 1)[1]}",
    "not base64": lambda i: "%%%.%%%.%%%",
    "empty": lambda i: "",
    "oversized": lambda i: i.mint(pad="x" * 10_000),
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
async def test_attack_is_rejected(issuer: TestTokenIssuer, attack: str) -> None:
    token = ATTACKS[attack](issuer)

    with pytest.raises(InvalidToken) as caught:
        await issuer.verifier().verify(token)

    assert isinstance(caught.value, Unauthorized)
    assert caught.value.status == 401
    for part in [token, *token.split(".")]:
        if len(part) > 8:
            assert part not in caught.value.detail


async def test_duplicate_claim_is_rejected(issuer: TestTokenIssuer) -> None:
    header = encode_segment(issuer.header())
    payload = b64url_encode(json.dumps(issuer.claims()).rstrip("}").encode() + b', "org": "org-2"}')
    signature = issuer.key.sign(f"{header}.{payload}".encode())

    with pytest.raises(InvalidToken):
        await issuer.verifier().verify(f"{header}.{payload}.{b64url_encode(signature)}")


async def test_jku_and_jwk_headers_are_never_fetched_or_trusted(issuer: TestTokenIssuer) -> None:
    token = ATTACKS["jku header injection"](issuer)

    with pytest.raises(InvalidToken):
        await issuer.verifier().verify(token)

    assert issuer.jwks.refreshes == 0


async def test_happy_path(issuer: TestTokenIssuer) -> None:
    token = issuer.mint(
        sub="user-7", roles=["provider"], loc=["loc-1", "loc-2"], amr=["pwd", "otp"]
    )

    claims = await issuer.verifier().verify(token)

    assert isinstance(claims, Claims)
    assert claims.sub == "user-7"
    assert claims.org == "org-1"
    assert claims.act == "user"
    assert claims.roles == ("provider",)
    assert claims.loc == ("loc-1", "loc-2")
    assert claims.amr == ("pwd", "otp")
    assert claims.sid == "session-1"
    assert claims.pat is None


async def test_patient_and_partner_tokens(issuer: TestTokenIssuer) -> None:
    verifier = issuer.verifier()

    patient = await verifier.verify(
        issuer.mint(act="patient", roles=["patient"], pat="p-9", loc=OMIT)
    )
    partner = await verifier.verify(
        issuer.mint(act="partner", roles=[], loc=OMIT, scope="patients:read patients:search")
    )

    assert patient.pat == "p-9"
    assert patient.loc == ()
    assert partner.scopes == {"patients:read", "patients:search"}


async def test_expiry_and_not_before_follow_the_clock_with_leeway(
    clock: FrozenClock, issuer: TestTokenIssuer
) -> None:
    verifier = issuer.verifier(leeway_s=30)
    token = issuer.mint()  # exp = now + 300
    early = issuer.mint(nbf=int(clock.now().timestamp()) + 120)

    with pytest.raises(InvalidToken, match="not valid yet"):
        await verifier.verify(early)
    clock.advance(timedelta(seconds=320))
    assert (await verifier.verify(token)).sub == "user-1"  # inside the leeway
    assert (await verifier.verify(early)).sub == "user-1"
    clock.advance(timedelta(seconds=15))
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_issued_in_the_future_is_rejected(
    clock: FrozenClock, issuer: TestTokenIssuer
) -> None:
    future = int(clock.now().timestamp()) + 600

    with pytest.raises(InvalidToken):
        await issuer.verifier().verify(issuer.mint(iat=future, nbf=future, exp=future + 300))


async def test_revoked_session_is_rejected_until_tokens_would_have_expired(
    clock: FrozenClock, issuer: TestTokenIssuer
) -> None:
    revoked = RevokedSessions(ttl_s=3600, clock=clock)
    verifier = issuer.verifier(revoked=revoked)
    token = issuer.mint(sid="session-9")
    other = issuer.mint(sid="session-10")
    await verifier.verify(token)

    await revoked.handler()(None, None, {"session_id": "session-9"})

    assert verifier.is_revoked("session-9")
    with pytest.raises(InvalidToken, match="session"):
        await verifier.verify(token)
    assert (await verifier.verify(other)).sid == "session-10"
    clock.advance(timedelta(seconds=3601))
    assert not revoked.is_revoked("session-9")
    assert len(revoked) == 0


async def test_unknown_kid_refreshes_once_then_rejects(
    clock: FrozenClock, issuer: TestTokenIssuer
) -> None:
    verifier = issuer.verifier()
    token = issuer.mint(header=issuer.header(kid="careloop-identity-signing:99"))

    with pytest.raises(InvalidToken, match="unknown"):
        await verifier.verify(token)
    assert issuer.jwks.refreshes == 1
    with pytest.raises(InvalidToken, match="unknown"):
        await verifier.verify(token)
    assert issuer.jwks.refreshes == 1  # rate-limited
    clock.advance(timedelta(seconds=31))
    with pytest.raises(InvalidToken):
        await verifier.verify(token)
    assert issuer.jwks.refreshes == 2


async def test_key_rotation_new_kid_is_picked_up_and_old_tokens_keep_working(
    clock: FrozenClock,
) -> None:
    old = TestTokenIssuer(clock, version=1)
    new = TestTokenIssuer(clock, version=2)
    jwks = StaticJwksSource(old.jwks_document())
    old.jwks = new.jwks = jwks
    verifier = old.verifier()
    old_token = old.mint()
    await verifier.verify(old_token)

    jwks.replace({"keys": old.jwks_document()["keys"] + new.jwks_document()["keys"]})

    assert (await verifier.verify(new.mint(sub="after-rotation"))).sub == "after-rotation"
    assert (await verifier.verify(old_token)).sub == "user-1"


async def test_rate_limit_claim_only_on_partner_tokens() -> None:
    from careloop_kit.auth.testing import TestTokenIssuer

    issuer = TestTokenIssuer()
    verifier = issuer.verifier()
    partner = issuer.mint(act="partner", sub="client-1", roles=[], scope="patients:read", rl=120)

    assert (await verifier.verify(partner)).rate_limit == 120
    for claims in (
        {"rl": 120},
        {"act": "partner", "roles": [], "rl": 0},
        {"act": "partner", "roles": [], "rl": "120"},
        {"act": "partner", "roles": [], "rl": True},
    ):
        with pytest.raises(InvalidToken):
            await verifier.verify(issuer.mint(**claims))
