"""Administration of a running bridge: `station-bridge outbox retry|drop` and `batch end` reach it
over a Unix socket in its data directory.

Only the bridge's own user (and root) may use it: the socket is mode 0600, and each connection's
peer credentials are checked as well. Every change is a transaction of the bridge's `State`
(disk first, then memory), then the dispatcher and the tablets hear of it: the same path a
delivery report takes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bridge.commands.admin import AdminError, check_not_stale, plan_drop, plan_end_batch, plan_retry
from bridge.config import BridgeConfig
from bridge.core.batches import Batch
from bridge.core.outbox import Change, Entry, Outbox
from bridge.core.outcomes import Event
from bridge.engine.state import State, batch_ids
from bridge.mes import MesClient

_log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
Plan = Callable[[dict[str, Batch], Outbox], Change]


def socket_path(config: BridgeConfig) -> Path:
    return config.data_dir / SOCKET_NAME


class LiveAdmin:
    """The bridge's side of the channel."""

    def __init__(self, state: State, *, mes: MesClient, wake: Callable[[str], None]) -> None:
        self._state = state
        self._mes = mes  # the bridge's own client: its pacer and its token, not another's
        self._wake = wake

    async def change(self, plan: Plan) -> Change:
        """The one place a live command changes the state."""
        async with self._state.transaction() as tx:
            change = plan(self._state.batches, self._state.outbox)
            tx.stage(change)
        return change

    async def retry(self, seqs: list[int]) -> Change:
        # The MES is asked first, outside the transaction: stations go on meanwhile.
        await check_not_stale(self._mes, plan_retry(self._state.outbox, seqs))
        change = await self.change(lambda _, outbox: plan_retry(outbox, seqs))
        for wip_id in sorted({entry.wip_id for entry in change.entries}):
            self._wake(wip_id)
        _log.warning("operator: %d dead letter(s) back in the queue", len(change.entries))
        self._state.publish_all_status()
        return change

    async def drop(self, seqs: list[int]) -> Change:
        change = await self.change(lambda _, outbox: plan_drop(outbox, seqs))
        _log.warning("operator: dropped %d dead letter(s)", len(change.dropped_entries))
        self._state.publish_all_status()
        return change

    async def end_batch(self, batch_id: str, station_id: str | None) -> Change:
        change = await self.change(
            lambda batches, outbox: plan_end_batch(batches, outbox, batch_id, station_id)
        )
        for batch in change.dropped_batches:
            _log.warning("operator: batch %s (%s) ended", batch.batch_id, batch.wip_id)
            self._state.result(
                batch.station_id,
                Event.BATCH_ABORTED,
                reason="ended by an operator (station-bridge batch end)",
                **batch_ids(batch),
            )
        self._state.publish_all_status()
        return change

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_same_user_only])
        app.router.add_post("/outbox/retry", self._handler(lambda body: self.retry(_seqs(body))))
        app.router.add_post("/outbox/drop", self._handler(lambda body: self.drop(_seqs(body))))
        app.router.add_post(
            "/batch/end", self._handler(lambda body: self.end_batch(*_batch_named(body)))
        )
        return app

    def _handler(
        self, action: Callable[[dict[str, Any]], Awaitable[Change]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                change = await action(await request.json())
            except AdminError as error:
                return web.json_response({"error": str(error)}, status=409)
            except (ValueError, KeyError, TypeError) as error:
                return web.json_response({"error": f"bad request: {error}"}, status=400)
            return web.Response(text=change_json(change), content_type="application/json")

        return handle


@contextlib.asynccontextmanager
async def serving(admin: LiveAdmin, path: Path) -> AsyncIterator[None]:
    """Serve the channel on `path` (the bridge holds its store's lock: a socket left there is a
    crashed bridge's)."""
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        _log.warning("no live administration: the socket path %s is too long", path)
        yield
        return
    _remove(path)
    runner = web.AppRunner(admin.app(), access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
        yield
    finally:
        await runner.cleanup()
        _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@web.middleware
async def _same_user_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    uid = _peer_uid(request)
    if uid is None or uid not in (0, os.getuid()):
        return web.json_response({"error": "only the bridge's user may administer it"}, status=403)
    return await handler(request)


def _peer_uid(request: web.Request) -> int | None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", raw)
    return int(uid)


def _seqs(body: dict[str, Any]) -> list[int]:
    seqs = body["seqs"]
    if not isinstance(seqs, list) or not all(isinstance(seq, int) for seq in seqs):
        raise ValueError("seqs must be a list of request numbers")
    return seqs


def _batch_named(body: dict[str, Any]) -> tuple[str, str | None]:
    station_id = body.get("station_id")
    if station_id is not None and not isinstance(station_id, str):
        raise ValueError("station_id must be a station id")
    return str(body["batch_id"]), station_id


def change_json(change: Change) -> str:
    return json.dumps(
        {
            "entries": [entry.model_dump(mode="json") for entry in change.entries],
            "dropped_entries": [entry.model_dump(mode="json") for entry in change.dropped_entries],
            "dropped_batches": [batch.model_dump(mode="json") for batch in change.dropped_batches],
        }
    )


def change_from_json(text: str) -> Change:
    body = json.loads(text)
    return Change(
        entries=[Entry.model_validate(item) for item in body["entries"]],
        dropped_entries=[Entry.model_validate(item) for item in body["dropped_entries"]],
        dropped_batches=[Batch.model_validate(item) for item in body["dropped_batches"]],
    )


def ask_running_bridge(config: BridgeConfig, path: str, body: dict[str, Any]) -> Change | None:
    """Have the running bridge make a change; None when no bridge answers on the socket (then
    the caller changes the store itself, which fails if a bridge holds it after all)."""
    where = socket_path(config)
    if not where.exists():
        return None
    transport = httpx.HTTPTransport(uds=str(where))
    try:
        with httpx.Client(transport=transport, base_url="http://bridge", timeout=30) as client:
            response = client.post(path, json=body)
    except httpx.ConnectError:  # a socket left by a bridge that is gone
        return None
    except httpx.HTTPError as error:
        raise AdminError(
            f"the running bridge did not answer ({error}): the change may still be made; "
            "look with `outbox list` / `batch list`"
        ) from error
    if response.status_code != 200:
        raise AdminError(response.json().get("error", response.text))
    return change_from_json(response.text)
