"""The admin socket: its own check of who is calling (a real Unix socket, a real second user),
and a clear answer to whatever else arrives on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.store import Store
from bridge.commands.live_admin import LiveAdmin, serving
from bridge.config import BridgeConfig
from bridge.engine.state import State
from bridge.mes import MesClient

NOBODY = 65534


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="station-bridge-admin-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@contextlib.asynccontextmanager
async def admin_socket(data_dir: Path, socket_file: Path) -> AsyncIterator[None]:
    """A bridge's state with no stations busy, its admin channel served on `socket_file`."""
    config = BridgeConfig(data_dir=data_dir, stations=[{"id": "1"}])
    store = Store(config.store_dir)
    state = State(
        config, store=store, publish=lambda *_, **__: None, clock=lambda: datetime.now(UTC)
    )
    await state.load()
    try:
        async with (
            MesClient(config.mes) as mes,  # never called: no command here asks the MES
            serving(LiveAdmin(state, mes=mes, wake=lambda _: None), socket_file),
        ):
            yield
    finally:
        await store.close()


async def curl(socket_file: Path, body: dict[str, Any], *, as_nobody: bool) -> tuple[int, Any]:
    command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", str(socket_file)]
    command += ["-X", "POST", "-d", json.dumps(body), "http://bridge/outbox/drop"]
    if as_nobody:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    text, status = out.decode().rsplit("\n", 1)
    return int(status), json.loads(text)


@pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("curl"),
    reason="needs root, setpriv and curl to call as a second user",
)
async def test_another_user_is_refused_even_with_the_socket_open_to_all(
    open_directory: Path, tmp_path: Path
) -> None:
    socket_file = open_directory / "admin.sock"
    async with admin_socket(tmp_path / "data", socket_file):
        assert socket_file.stat().st_mode & 0o777 == 0o600
        socket_file.chmod(0o666)  # as if someone widened it: the peer check still holds
        status, body = await curl(socket_file, {"seqs": [1]}, as_nobody=True)
        assert (status, body) == (403, {"error": "only the bridge's user may administer it"})
        status, body = await curl(socket_file, {"seqs": [1]}, as_nobody=False)
        assert status == 409 and "there is no request #1" in body["error"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"POST /outbox/drop HTTP/1.1\r\nContent-Length: 5\r\n\r\n{oops", 400, "not JSON"),
        (b"POST /outbox/drop HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400, "JSON object"),
        (
            b'POST /outbox/drop HTTP/1.1\r\nContent-Length: 13\r\n\r\n{"seqs": "1"}',
            400,
            "seqs must be a list",
        ),
        (b"POST /nothing HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 404, "no such command"),
        (b"GET /outbox/drop HTTP/1.1\r\n\r\n", 400, "a POST with a Content-Length"),
        (b"POST /outbox/drop HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 400, "at most"),
        (b"POST /outbox/drop HTTP/1.1\r\nContent-Length: 9\r\n\r\n{}", 400, "ended before"),
        (b"X" * 10_000, 400, "no HTTP request head"),
    ],
    ids=["not json", "not an object", "wrong type", "unknown", "get", "huge", "short", "no head"],
)
async def test_whatever_arrives_on_the_socket_gets_a_clear_answer(
    tmp_path: Path, request_bytes: bytes, status: int, error: str
) -> None:
    socket_file = tmp_path / "admin.sock"
    async with admin_socket(tmp_path / "data", socket_file):
        reader, writer = await asyncio.open_unix_connection(str(socket_file))
        writer.write(request_bytes)
        writer.write_eof()  # a short body ends here, not after a timeout
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
        assert error in json.loads(body)["error"]
        # The bridge's channel still serves the next command.
        reader, writer = await asyncio.open_unix_connection(str(socket_file))
        writer.write(b'POST /outbox/drop HTTP/1.1\r\nContent-Length: 13\r\n\r\n{"seqs": [1]}')
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 409 ") and b"there is no request #1" in answer
