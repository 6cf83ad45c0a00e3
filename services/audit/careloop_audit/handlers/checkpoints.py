"""The checkpoint job: every few seconds or records, sign a checkpoint if one is due
(`usecases.checkpoints.CheckpointSigner`)."""

from __future__ import annotations

import asyncio

from careloop_audit.settings import AuditSettings
from careloop_audit.usecases.checkpoints import CheckpointSigner
from careloop_kit.service import Runtime


async def checkpoint_job(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background loop: sign checkpoints until `stop` is set."""
    signer: CheckpointSigner = runtime.state["signer"]
    settings = runtime.settings
    assert isinstance(settings, AuditSettings)
    poll_s = min(settings.checkpoint_interval_s, 1.0)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
        except TimeoutError:
            await signer.tick(runtime)
