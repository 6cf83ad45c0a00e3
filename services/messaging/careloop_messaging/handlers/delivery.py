"""The delivery worker: a background job that sends due messages until shutdown (the
sending itself, one message and one transaction at a time, is `usecases.delivery`)."""

from __future__ import annotations

import asyncio
import contextlib

from careloop_kit.service import Runtime
from careloop_messaging.usecases.context import settings_of
from careloop_messaging.usecases.delivery import deliver_due


async def delivery_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: deliver due messages until shutdown."""
    settings = settings_of(runtime)
    while not stop.is_set():
        await deliver_due(runtime)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.delivery_poll_interval_s)
