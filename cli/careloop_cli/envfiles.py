"""Per-service environment files written by `careloop dev up` (local development only).

They hold each service's database URL and Vault token, so `careloop serve`,
`migrate`, `audit verify` and `dlq` find the local stack without flags. They
live under the git-ignored `.careloop/` folder, readable by the owner only.
"""

from __future__ import annotations

import os
from pathlib import Path

from careloop_kit.infra.kafka import KafkaSetupError, find_repo_root


def state_dir() -> Path:
    """The git-ignored folder holding local stack data and state (`CARELOOP_STATE_DIR`)."""
    override = os.environ.get("CARELOOP_STATE_DIR")
    return Path(override).resolve() if override else find_repo_root() / ".careloop"


def env_file(service: str) -> Path:
    return state_dir() / "env" / f"{service}.env"


def write_env_file(service: str, values: dict[str, str]) -> Path:
    path = env_file(service)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    body = "# Local development only: written by `careloop dev up`.\n" + "".join(
        f"{key}={value}\n" for key, value in sorted(values.items())
    )
    path.write_text(body)
    path.chmod(0o600)
    return path


def load_env_file(service: str) -> dict[str, str]:
    """Values from the service's env file, without overriding the real environment.

    Outside a checkout (a container image) there is no local stack and no env file.
    """
    try:
        path = env_file(service)
    except KafkaSetupError:
        return {}
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key] = value
    return {k: v for k, v in values.items() if k not in os.environ}


def apply_env_file(service: str) -> None:
    """Put the service's env-file values into this process's environment."""
    os.environ.update(load_env_file(service))
