"""Secrets and keys from a Vault API (OpenBao or HashiCorp Vault) through hvac.

hvac is synchronous, so every call runs in a worker thread. Any failure to
reach Vault surfaces as `VaultUnavailable`, which callers turn into a 503:
PHI operations fail closed.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hvac
import requests

from careloop_kit.errors import DependencyUnavailable

if TYPE_CHECKING:
    from careloop_kit.settings import KitSettings


class VaultUnavailable(DependencyUnavailable):
    """Vault could not be reached or refused the call."""


class Vault:
    """The calls Careloop services make to Vault, with the service's own token."""

    def __init__(
        self,
        addr: str,
        token: str,
        *,
        ca_cert: str | None = None,
        timeout_s: float = 5.0,
        kv_mount: str = "secret",
        transit_mount: str = "transit",
    ) -> None:
        self._client = hvac.Client(url=addr, token=token, verify=ca_cert or True, timeout=timeout_s)
        self._kv_mount = kv_mount
        self._transit_mount = transit_mount
        self._token_file: Path | None = None
        self._token_file_stamp: tuple[int, int] | None = None

    @classmethod
    def from_settings(cls, settings: KitSettings) -> Vault:
        """The service's Vault client: its token from `vault_token_file` when that is set
        (a Vault agent's sink, re-read whenever the agent writes a new token), else from
        `vault_token`."""
        vault = cls(
            settings.vault_addr,
            settings.vault_token.get_secret_value(),
            ca_cert=settings.vault_ca_cert,
        )
        if settings.vault_token_file:
            vault._token_file = Path(settings.vault_token_file)
            vault._reload_token()
        return vault

    def _reload_token(self) -> None:
        if self._token_file is None:
            return
        try:
            status = os.stat(self._token_file)
        except OSError as exc:
            raise VaultUnavailable(
                f"Vault token file {self._token_file} cannot be read ({exc.strerror}); "
                "check CARELOOP_VAULT_TOKEN_FILE and the agent or init job that writes it"
            ) from exc
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp != self._token_file_stamp:
            self._client.token = self._token_file.read_text().strip()
            self._token_file_stamp = stamp

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._reload_token()
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise VaultUnavailable(f"Vault call failed: {type(exc).__name__}: {exc}") from exc

    async def read_secret(self, path: str) -> dict[str, Any]:
        """Read a KV v2 secret's data."""
        response = await self._call(
            self._client.secrets.kv.v2.read_secret_version,
            path=path,
            mount_point=self._kv_mount,
            raise_on_deleted_version=True,
        )
        return dict(response["data"]["data"])

    async def new_data_key(self, key_name: str) -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext, ciphertext wrapped by the transit key)."""
        response = await self._call(
            self._client.secrets.transit.generate_data_key,
            name=key_name,
            key_type="plaintext",
            bits=256,
            mount_point=self._transit_mount,
        )
        data = response["data"]
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"])

    async def unwrap_data_key(self, key_name: str, ciphertext: str) -> bytes:
        """Decrypt a wrapped data key with the transit key."""
        response = await self._call(
            self._client.secrets.transit.decrypt_data,
            name=key_name,
            ciphertext=ciphertext,
            mount_point=self._transit_mount,
        )
        return base64.b64decode(response["data"]["plaintext"])

    async def rewrap(self, key_name: str, ciphertexts: list[str]) -> list[str]:
        """The same ciphertexts wrapped by the transit key's latest version, in order. Vault
        decrypts and re-encrypts inside itself: no plaintext leaves it."""
        if not ciphertexts:
            return []
        response = await self._call(
            self._client.secrets.transit.rewrap_data,
            name=key_name,
            ciphertext=ciphertexts[0],
            batch_input=[{"ciphertext": c} for c in ciphertexts],
            mount_point=self._transit_mount,
        )
        results = response["data"]["batch_results"]
        failed = [r["error"] for r in results if r.get("error")]
        if failed:
            raise VaultUnavailable(f"Vault refused to rewrap {len(failed)} key(s): {failed[0]}")
        return [str(r["ciphertext"]) for r in results]

    async def sign(self, key_name: str, message: bytes) -> tuple[str, int]:
        """Sign `message` with a transit key; returns (signature, key version)."""
        response = await self._call(
            self._client.secrets.transit.sign_data,
            name=key_name,
            hash_input=base64.b64encode(message).decode(),
            mount_point=self._transit_mount,
        )
        signature = str(response["data"]["signature"])
        version = int(signature.split(":")[1].removeprefix("v"))
        return signature, version

    async def verify(self, key_name: str, message: bytes, signature: str) -> bool:
        """Check a transit signature over `message`."""
        response = await self._call(
            self._client.secrets.transit.verify_signed_data,
            name=key_name,
            hash_input=base64.b64encode(message).decode(),
            signature=signature,
            mount_point=self._transit_mount,
        )
        return bool(response["data"]["valid"])

    async def read_transit_key(self, key_name: str) -> dict[str, Any]:
        """The `data` of `transit/keys/<key_name>`: its versions' public keys, never private."""
        response = await self._call(
            self._client.secrets.transit.read_key, name=key_name, mount_point=self._transit_mount
        )
        data: dict[str, Any] = response["data"]
        return data

    @property
    def token_from_file(self) -> bool:
        """The token comes from a file whose writer (a Vault agent) also renews it."""
        return self._token_file is not None

    async def renew_token(self) -> int:
        """Renew this service's own (periodic) token; returns its new TTL in seconds."""
        response = await self._call(self._client.auth.token.renew_self)
        return int(response["auth"]["lease_duration"])

    async def healthy(self) -> bool:
        """True when Vault answers, is unsealed, and our token is valid."""
        try:
            await self._call(self._client.auth.token.lookup_self)
        except VaultUnavailable:
            return False
        return True
