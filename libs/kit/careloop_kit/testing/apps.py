"""Run an app in-process against the real infrastructure, for service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI

from careloop_kit.infra.ports import free_port

_T = TypeVar("_T")


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
    servers = {name: serve_in_task(app, port=(ports or {}).get(name)) for name, app in apps.items()}
    async with entered_at_once(servers) as urls:
        yield urls


@asynccontextmanager
async def entered_at_once(
    managers: Mapping[str, AbstractAsyncContextManager[_T]],
) -> AsyncIterator[dict[str, _T]]:
    """Enter every context manager (name -> manager) at once; yield name -> what each
    gave. Every entry runs to its end before a failure is raised, so each one that was
    entered is left again, and none is left starting unattended."""
    async with AsyncExitStack() as stack:

        async def enter(name: str, manager: AbstractAsyncContextManager[_T]) -> tuple[str, _T]:
            return name, await stack.enter_async_context(manager)

        entered = await asyncio.gather(
            *(enter(name, manager) for name, manager in managers.items()),
            return_exceptions=True,
        )
        failures = [result for result in entered if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        yield dict(result for result in entered if not isinstance(result, BaseException))
