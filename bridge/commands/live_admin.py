"""Administration of a running bridge: `station-bridge outbox retry|drop` and `batch end` reach it
over a Unix socket in its data directory.

Only the bridge's own user (and root) may use it: the socket is mode 0600, and each connection's
peer credentials are checked as well. Every change is a transaction of the bridge's `State`
(disk first, then memory), then the dispatcher and the tablets hear of it: the same path a
delivery report takes.
"""

from __future__ import annotations

import asyncio
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

    async def answer(self, path: str, body: Any) -> tuple[int, Any]:
        """What a request on the socket gets: a status and a JSON body."""
        actions: dict[str, Callable[[dict[str, Any]], Awaitable[Change]]] = {
            "/outbox/retry": lambda body: self.retry(_seqs(body)),
            "/outbox/drop": lambda body: self.drop(_seqs(body)),
            "/batch/end": lambda body: self.end_batch(*_batch_named(body)),
        }
        action = actions.get(path)
        if action is None:
            return 404, {"error": f"no such command: {path}"}
        try:
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            change = await action(body)
        except AdminError as error:
            return 409, {"error": str(error)}
        except (ValueError, KeyError, TypeError) as error:
            return 400, {"error": f"bad request: {error}"}
        return 200, change_json(change)


# The channel speaks just enough HTTP/1.1 for `curl --unix-socket` and httpx: one POST with a
# Content-Length body per connection, a JSON answer, then the connection closes. A web framework
# for three commands on a local socket cost the bridge ~10 MB of resident memory on every run.
_MAX_HEAD = 8 * 1024
_MAX_BODY = 64 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}


@contextlib.asynccontextmanager
async def serving(admin: LiveAdmin, path: Path) -> AsyncIterator[None]:
    """Serve the channel on `path` (the bridge holds its store's lock: a socket left there is a
    crashed bridge's)."""
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        _log.warning("no live administration: the socket path %s is too long", path)
        yield
        return
    _remove(path)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await _exchange(admin, reader, writer)
            text = body if isinstance(body, str) else json.dumps(body)
            payload = text.encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
        except ConnectionError:
            pass  # the command went away; what it asked for is done or not, as the store says
        finally:
            writer.close()

    server = await asyncio.start_unix_server(connection, path=str(path), limit=_MAX_HEAD)
    try:
        os.chmod(path, 0o600)
        yield
    finally:
        server.close()
        await server.wait_closed()
        _remove(path)


async def _exchange(
    admin: LiveAdmin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[int, Any]:
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return 400, {"error": f"bad request: no HTTP request head within {_MAX_HEAD} bytes"}
    request_line, *header_lines = head.split("\r\n")
    method, _, rest = request_line.partition(" ")
    target = rest.partition(" ")[0]
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        return 400, {"error": "bad request: a POST with a Content-Length is expected"}
    if method != "POST" or not 0 <= length <= _MAX_BODY:
        return 400, {"error": f"bad request: a POST of at most {_MAX_BODY} bytes is expected"}
    try:
        raw = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return 400, {"error": "bad request: the body ended before its Content-Length"}
    # Read first, then refuse: a peer told "no" before it finished writing would see a reset.
    uid = _peer_uid(writer)
    if uid is None or uid not in (0, os.getuid()):
        return 403, {"error": "only the bridge's user may administer it"}
    try:
        body = json.loads(raw)
    except ValueError as error:
        return 400, {"error": f"bad request: the body is not JSON ({error})"}
    return await admin.answer(target, body)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
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
