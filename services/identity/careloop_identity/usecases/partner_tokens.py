"""The `client_credentials` grant (RFC 6749 §4.4): a partner API client authenticates
with its secret and gets a short access token (`act: partner`) carrying its scopes,
locations and rate limit (`rl`). Scopes that reach patient data are issued only while
the client's business associate agreement is current.

Failed client authentication is committed to the audit trail before the 401 goes out,
so `issue_client_token` opens its transaction itself, like the login step.
"""

from __future__ import annotations

from dataclasses import dataclass

from careloop_identity.domain.clients import (
    Baa,
    ScopeRefused,
    effective_scopes,
    hash_secret,
    parse_scope_parameter,
    secret_matches,
    session_id,
    utc_day,
)
from careloop_identity.domain.tokens import AccessGrant
from careloop_identity.store.clients import ClientRepository, StoredClient
from careloop_identity.usecases.common import (
    AUDIT_DETAIL,
    UNKNOWN_ACTOR,
    Failure,
    RequestMeta,
    identity_entry,
    signer_of,
)
from careloop_identity.usecases.service_tokens import InvalidScope, OAuthProblem
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import Principal
from careloop_kit.context import StepContext, own_transaction
from careloop_kit.service import Runtime

MAX_CLIENT_ID = 128
BASIC_CHALLENGE = 'Basic realm="careloop"'
# What the audit trail calls a partner's token request (a `ServiceToken` for services).
TOKEN_RESOURCE = "ClientToken"  # noqa: S105 - a resource type, not a secret
# Compared against when the client is unknown, so that case costs the same hash work.
_NO_CLIENT_HASH = hash_secret("no client has this secret")
CLIENT_AUTH_FAILED = (
    "Client authentication failed: unknown client, wrong secret, or a disabled client. "
    "Send client_id and client_secret by HTTP Basic or as form fields."
)


class InvalidClientCredentials(OAuthProblem):
    status, title, slug = 401, "Client authentication failed", "invalid-client"
    error = "invalid_client"


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str


@dataclass(frozen=True)
class ClientToken:
    access_token: str
    expires_in: int
    scope: str


async def issue_client_token(
    runtime: Runtime,
    credentials: ClientCredentials | None,
    requested_scope: str | None,
    *,
    meta: RequestMeta,
) -> ClientToken | Failure:
    """An access token for an authenticated, enabled client, with the scopes asked for
    (or all it holds) that its BAA allows today; a `Failure` (committed to the audit
    trail) otherwise."""
    async with own_transaction(runtime, **meta) as step:
        client = None
        if credentials is not None and 0 < len(credentials.client_id) <= MAX_CLIENT_ID:
            client = await ClientRepository(step.session).find(credentials.client_id)
        entry = identity_entry("create", TOKEN_RESOURCE)
        async with step.audited(_UNKNOWN_CLIENT if client is None else _partner(client), entry):
            return await _client_credentials(step, entry, credentials, client, requested_scope)


def _partner(client: StoredClient) -> Principal:
    return Principal(actor_id=client.id, actor_type="partner", org_id=client.org_id)


# Who failed to authenticate is unknown. The presented client_id is not recorded: a
# partner who swaps its fields would otherwise write its secret into the audit trail.
_UNKNOWN_CLIENT = Principal(actor_id=UNKNOWN_ACTOR, actor_type="partner", org_id=UNKNOWN_ACTOR)


def _refusal(credentials: ClientCredentials | None, client: StoredClient | None) -> str | None:
    """Why the presented credentials do not authenticate `client`, or None."""
    if credentials is None:
        return "no client credentials"
    if client is None:
        secret_matches(credentials.secret, _NO_CLIENT_HASH)
        return "unknown client"
    if not secret_matches(credentials.secret, client.secret_hash):
        return "wrong client secret"
    # Checked after the secret, so only the secret's holder learns it is disabled (from
    # the audit trail of its organization; the answer is the same).
    if client.disabled_at is not None:
        return "client disabled"
    return None


async def _client_credentials(
    step: StepContext,
    entry: AuditEntry,
    credentials: ClientCredentials | None,
    client: StoredClient | None,
    requested_scope: str | None,
) -> ClientToken | Failure:
    refusal = _refusal(credentials, client)
    if refusal is not None or client is None:
        entry.refuse(f"401 {refusal}"[:AUDIT_DETAIL])
        return Failure(
            InvalidClientCredentials(CLIENT_AUTH_FAILED), {"WWW-Authenticate": BASIC_CHALLENGE}
        )
    runtime = step.runtime
    now = runtime.clock.now()
    sid = session_id(client.id, client.secret_version)

    try:
        scopes = effective_scopes(
            parse_scope_parameter(requested_scope),
            client.scopes,
            Baa(client.baa_signed_on, client.baa_expires_on),
            utc_day(now),
        )
    except ScopeRefused as exc:
        entry.refuse("400 invalid_scope")
        return Failure(InvalidScope(str(exc)), {})
    scope = " ".join(scopes)
    signer = signer_of(runtime)
    token = await signer.issue(
        AccessGrant(
            user_id=client.id,
            org_id=client.org_id,
            session_id=sid,
            actor_type="partner",
            roles=(),
            locations=client.locations,
            patient_id=None,
            amr=(),
            scope=scope,
            rate_limit=client.rate_limit_per_minute,
        )
    )
    entry.resource_id, entry.outcome_detail = sid, f"scope={scope}"[:AUDIT_DETAIL]
    return ClientToken(access_token=token, expires_in=int(signer.ttl.total_seconds()), scope=scope)
