"""Break-glass grants: the `bg` claim, its expiry, and what a grant opens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from careloop_kit.auth import AuthenticatedPrincipal, InvalidToken, principal_from_claims
from careloop_kit.auth.dependencies import authenticate
from careloop_kit.auth.testing import OMIT, TestTokenIssuer
from careloop_kit.auth.tokens import MAX_BREAK_GLASS_GRANTS, BreakGlassGrant
from careloop_kit.clock import FrozenClock
from careloop_kit.problems import Forbidden

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def issuer(clock: FrozenClock) -> TestTokenIssuer:
    return TestTokenIssuer(clock)


def bg(clock: FrozenClock, patient: str = "p-9", *, in_s: int = 3600, gid: str = "g-1") -> Any:
    return {"pat": patient, "exp": int(clock.now().timestamp()) + in_s, "gid": gid}


def provider(issuer: TestTokenIssuer, **claims: Any) -> str:
    values: dict[str, Any] = {"roles": ["provider"], "loc": ["loc-1"], "amr": ["pwd", "otp"]}
    values.update(claims)
    return issuer.mint(**values)


async def test_bg_claim_is_parsed(issuer: TestTokenIssuer, clock: FrozenClock) -> None:
    entry = bg(clock)
    claims = await issuer.verifier().verify(provider(issuer, bg=[entry]))
    assert claims.break_glass == (BreakGlassGrant("p-9", entry["exp"], "g-1"),)
    without = await issuer.verifier().verify(provider(issuer))
    assert without.break_glass == ()


@pytest.mark.parametrize(
    "value",
    [
        "p-9",
        {"pat": "p-9", "exp": 1, "gid": "g"},
        [["p-9", 1, "g"]],
        [{"pat": "p-9", "exp": 2_000_000_000}],
        [{"pat": "p-9", "exp": 2_000_000_000, "gid": "g", "loc": "loc-2"}],
        [{"pat": "", "exp": 2_000_000_000, "gid": "g"}],
        [{"pat": 9, "exp": 2_000_000_000, "gid": "g"}],
        [{"pat": "p-9", "exp": "2000000000", "gid": "g"}],
        [{"pat": "p-9", "exp": True, "gid": "g"}],
        [{"pat": "p-9", "exp": 2.0e9, "gid": "g"}],
        [{"pat": "p-9", "exp": 2_000_000_000, "gid": None}],
        [{"pat": "x" * 257, "exp": 2_000_000_000, "gid": "g"}],
        [
            {"pat": f"p-{n}", "exp": 2_000_000_000, "gid": f"g-{n}"}
            for n in range(MAX_BREAK_GLASS_GRANTS + 1)
        ],
    ],
)
async def test_malformed_bg_claim_is_invalid(issuer: TestTokenIssuer, value: Any) -> None:
    with pytest.raises(InvalidToken, match="'bg'"):
        await issuer.verifier().verify(provider(issuer, bg=value))


async def test_only_staff_user_tokens_may_carry_grants(
    issuer: TestTokenIssuer, clock: FrozenClock
) -> None:
    patient = issuer.mint(act="patient", roles=["patient"], pat="p-1", loc=OMIT, bg=[bg(clock)])
    partner = issuer.mint(act="partner", roles=[], loc=OMIT, scope="patients:read", bg=[bg(clock)])
    for token in (patient, partner):
        with pytest.raises(InvalidToken, match="'bg'"):
            await issuer.verifier().verify(token)


async def test_a_grant_opens_its_patient_outside_the_locations_until_it_expires(
    issuer: TestTokenIssuer, clock: FrozenClock
) -> None:
    verifier = issuer.verifier()
    claims = await verifier.verify(provider(issuer, bg=[bg(clock, in_s=600)]))
    principal = principal_from_claims(claims, now=clock.now().timestamp())

    assert principal.can_access_patient("p-9", "loc-2")
    assert principal.can_access_patient("p-9", "loc-2", org_id="org-1")
    assert principal.purpose_for("p-9") == "ETREAT"
    assert principal.acting_for("p-9").purpose_of_use == "ETREAT"
    assert principal.acting_for("p-9").grants == principal.grants
    # Another patient is not opened, nor does a grant widen searches (allows_patient).
    with pytest.raises(Forbidden):
        principal.can_access_patient("p-8", "loc-2")
    assert not principal.allows_patient("p-9", "loc-2")
    # In-scope access without a grant keeps the principal's own purpose.
    assert principal.purpose_for("p-1", "loc-1") == "TREAT"
    assert principal.acting_for("p-1") is principal
    assert principal.purpose_for("p-9", "loc-1") == "TREAT"

    clock.advance(timedelta(seconds=600))
    # A fresh token that still carries the entry, now expired: the grant is gone.
    later = await verifier.verify(
        provider(issuer, bg=[{**bg(clock), "exp": int(clock.now().timestamp())}])
    )
    expired = principal_from_claims(later, now=clock.now().timestamp())
    assert expired.grants == ()
    with pytest.raises(Forbidden):
        expired.can_access_patient("p-9", "loc-2")
    assert expired.purpose_for("p-9") == "TREAT"
    assert principal.grant_for("p-9", now=clock.now().timestamp()) is None


async def test_a_grant_never_crosses_tenants(issuer: TestTokenIssuer, clock: FrozenClock) -> None:
    claims = await issuer.verifier().verify(provider(issuer, bg=[bg(clock)]))
    principal = principal_from_claims(claims, now=clock.now().timestamp())
    with pytest.raises(Forbidden):
        principal.can_access_patient("p-9", "loc-2", org_id="org-2")
    assert not principal.allows_patient_by_grant("p-9", org_id="org-2")


def test_patient_accounts_never_use_grants() -> None:
    portal = AuthenticatedPrincipal(
        actor_id="portal-1",
        actor_type="patient",
        org_id="org-1",
        roles=("patient",),
        patient_id="p-1",
        grants=(BreakGlassGrant("p-2", 2_000_000_000, "g"),),
    )
    with pytest.raises(Forbidden):
        portal.can_access_patient("p-2", None)
    assert portal.purpose_for("p-2") == "TREAT"


async def test_authenticate_drops_grants_expired_by_the_verifiers_clock(
    issuer: TestTokenIssuer, clock: FrozenClock
) -> None:
    from types import SimpleNamespace

    verifier = issuer.verifier()
    token = provider(issuer, bg=[bg(clock, in_s=60, gid="g-short"), bg(clock, "p-7", gid="g-2")])
    clock.advance(timedelta(seconds=61))
    request: Any = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(token_verifier=verifier)),
        headers={"authorization": f"Bearer {token}"},
        state=SimpleNamespace(),
    )
    principal = await authenticate(request)
    assert [g.grant_id for g in principal.grants] == ["g-2"]
