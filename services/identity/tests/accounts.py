"""Accounts the identity tests sign in with."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from careloop_kit.clock import FrozenClock

from .test_break_glass import signed_in_with_otp
from .test_service import Account, make_account


@dataclass
class SignedIn:
    account: Account
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def org_admin(
    client: httpx.AsyncClient, clock: FrozenClock, *, marker: str = "admin"
) -> SignedIn:
    """A fresh organization (one location) and its org admin, signed in with TOTP."""
    account = await make_account(client, ["org_admin"], clock=clock, marker=marker)
    tokens = await signed_in_with_otp(client, clock, account)
    return SignedIn(account, tokens["access_token"])
