"""`careloop vault bootstrap`: prepare a Vault (OpenBao) for Careloop.

Engines, keys, secrets and per-service policies come from the kit's `bootstrap_vault`,
the same code `make run` uses, so compose and a cluster's first set-up get exactly
what a developer's machine gets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT_TOKEN_VARIABLE = "CARELOOP_VAULT_ROOT_TOKEN"  # noqa: S105 (a variable's name)
TOKEN_FILE_NAME = "vault-token"  # noqa: S105 (a file name)
INIT_FILE_NAME = "init.json"


class VaultSetupError(SystemExit):
    """Bootstrap cannot go on; the message says what to do."""


def wait_for_vault(client: Any, timeout_s: float, report: Callable[[str], None]) -> dict[str, Any]:
    """Vault's seal status once it answers (sealed or not), or a clear error."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            status: dict[str, Any] = client.sys.read_seal_status()
            return status
        except Exception as exc:  # any connection or TLS failure: keep waiting
            last_error = f"{type(exc).__name__}: {exc}"
        report("waiting for Vault to answer ...")
        time.sleep(1)
    raise VaultSetupError(
        f"Vault at {client.url} did not answer within {timeout_s:.0f}s ({last_error}); "
        "check CARELOOP_VAULT_ADDR and CARELOOP_VAULT_CA_CERT"
    )


def resolve_root_token(
    client: Any,
    status: dict[str, Any],
    unseal_state: Path | None,
    root_token_file: Path | None,
    report: Callable[[str], None],
) -> str:
    """Initialise and unseal a local OpenBao when asked to, and find the root token."""
    from careloop_kit.infra.openbao import initialise_local, unseal_local

    kept_token: str | None = None
    if unseal_state is not None:
        unseal_state.mkdir(parents=True, exist_ok=True)
        init_file = unseal_state / INIT_FILE_NAME
        if not status.get("initialized"):
            report("initialising a new OpenBao (one key share, local development only)")
            kept_token = initialise_local(client, init_file)
        if client.sys.read_seal_status().get("sealed"):
            report("unsealing")
            kept_token = unseal_local(client, init_file)
        elif init_file.is_file() and kept_token is None:
            import json

            kept_token = str(json.loads(init_file.read_text())["root_token"])
    elif status.get("sealed"):
        raise VaultSetupError(
            "Vault is sealed; unseal it (production: auto-unseal) before the bootstrap"
        )
    if root_token_file is not None:
        return root_token_file.read_text().strip()
    if os.environ.get(ROOT_TOKEN_VARIABLE):
        return os.environ[ROOT_TOKEN_VARIABLE]
    if kept_token:
        return kept_token
    raise VaultSetupError(
        f"no root token: set {ROOT_TOKEN_VARIABLE}, pass --root-token-file, or (local "
        "development only) --unseal-state"
    )


def wait_until_active(client: Any, timeout_s: float) -> None:
    """Block until an unsealed Vault serves requests (a new raft node elects itself first)."""
    deadline = time.monotonic() + timeout_s
    last_error = "no leader yet"
    while time.monotonic() < deadline:
        try:
            if not client.sys.read_seal_status().get("sealed"):
                leader = client.sys.read_leader_status()
                if not leader.get("ha_enabled") or leader.get("is_self"):
                    return
        except Exception as exc:  # still electing a leader: keep waiting
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise VaultSetupError(
        f"Vault at {client.url} is not active after {timeout_s:.0f}s ({last_error})"
    )


def write_tokens(token_dir: Path, tokens: dict[str, str]) -> list[Path]:
    """One file per service, `<dir>/<service>/vault-token`, readable by its owner only."""
    written = []
    for service, token in tokens.items():
        directory = token_dir / service
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKEN_FILE_NAME
        # Replace atomically: a service re-reads the file whenever it changes.
        staging = directory / f".{TOKEN_FILE_NAME}.new"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        staging.replace(path)
        written.append(path)
    return written
