"""Run an app in-process against the real infrastructure, for service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from careloop_kit.infra.ports import free_port


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (database, Vault, Kafka) and give an HTTP client to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@asynccontextmanager
async def serve_in_task(app: Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under uvicorn on a free port in this event loop; yield its URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited before it started")
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def serve_in_tasks(
    apps: Mapping[str, Any], *, ports: Mapping[str, int] | None = None
) -> AsyncIterator[dict[str, str]]:
    """`serve_in_task` for each app (name -> app, on `ports[name]` if given), their
    lifespans started at once; yield name -> URL once every one is serving.

    A lifespan mostly waits on the database, Vault and the broker (a consumer joining its
    group), so side by side the apps start in about the time of the slowest. All are
    stopped on the way out, also when one of them failed to start."""
    async with AsyncExitStack() as stack:

        async def start(name: str, app: Any) -> tuple[str, str]:
            port = (ports or {}).get(name)
            return name, await stack.enter_async_context(serve_in_task(app, port=port))

        # Every start runs to its end before a failure is raised, so the stack stops each
        # app that did start, and none is left starting unattended.
        started = await asyncio.gather(
            *(start(name, app) for name, app in apps.items()), return_exceptions=True
        )
        failures = [result for result in started if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        yield dict(result for result in started if not isinstance(result, BaseException))
