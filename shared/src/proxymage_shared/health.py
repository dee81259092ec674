"""The small HTTP server every service runs: `/healthz` (alive), `/readyz` (dependencies), `/metrics`.

`/readyz` answers 200 only when every readiness check passes (Kafka, MongoDB and the service's external
peer); each check has a deadline so a hung dependency makes the service "not ready", not the probe hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Final

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_SECONDS: Final = 2.0


async def _run_check(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False


def create_health_app(
    service: str,
    checks: Mapping[str, ReadinessCheck],
    registry: CollectorRegistry = REGISTRY,
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"service": service, "status": "alive"})

    async def readyz(_: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[name]) for name in names))
        outcome = dict(zip(names, results, strict=True))
        ready = all(results)
        return JSONResponse({"service": service, "ready": ready, "checks": outcome}, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service's runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HealthServer:
    """Runs an ASGI app (the health app, or a service's own) on host:port inside the service's event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="health-server")
        while not self._server.started:
            if self._task.done():
                await self._task  # re-raises the start-up error (e.g. port in use)
                raise RuntimeError("health server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets: list[socket.socket] = [sock for server in self._server.servers for sock in server.sockets]
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None
