"""The HTTP endpoint (`http.listen`): `/healthz`, `/readyz`, `/metrics`, `/status.json` and the
status page `/`. Read-only and unauthenticated: keep it on loopback, or on a network only the
people who keep the line running can reach.

aiohttp's server runs in the bridge's own event loop, so `/healthz` answering is itself the proof
that the loop is not stuck.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.adapters.listening import HttpEndpointError, is_loopback
from bridge.web.metrics import BridgeMetrics
from bridge.web.overview import Overview
from bridge.web.status_page import render

_log = logging.getLogger(__name__)


def endpoint_app(overview: Overview, metrics: BridgeMetrics) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        snapshot = overview.snapshot()
        body = {
            "ready": snapshot["ready"],
            "broker_connected": snapshot["broker"]["connected"],
            # The endpoint serves only while the store is open; this is whether it still takes
            # writes (a full or read-only disk fails the commits).
            "store_writable": snapshot["store_writable"],
            "mes": snapshot["mes"]["state"],
        }
        return web.json_response(body, status=200 if snapshot["ready"] else 503)

    async def prometheus(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def status_json(_: web.Request) -> web.Response:
        return web.json_response(overview.snapshot())

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=render(overview.snapshot()), content_type="text/html")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/", page)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, host: str, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            raise HttpEndpointError(f"http.listen {host}:{port}: {error.strerror}") from error
        where = "" if is_loopback(host) else " (not loopback: anyone on that network can read it)"
        _log.info("health, metrics and status page on http://%s:%s/%s", host, port, where)
        yield
    finally:
        await runner.cleanup()
