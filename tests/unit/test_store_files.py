"""bridge.adapters.store: the data directory and its files are the bridge user's alone, any
umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o002], ids=["umask-022", "umask-000", "umask-002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


async def test_a_new_store_is_private(tmp_path: Path, umask: int) -> None:
    data_dir = tmp_path / "var" / "data"
    store = Store(data_dir / "store")
    await store.open()
    try:
        await store.commit({"batch:B1": '{"wip_id": "W"}'})
        # while open, SQLite's -wal and -shm files are there too
        files = [entry for entry in (data_dir / "store").iterdir() if entry.is_file()]
        modes = {entry.name: mode(entry) for entry in files}
    finally:
        await store.close()
    assert mode(tmp_path / "var") == 0o700
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "store") == 0o700
    assert set(modes) >= {"cache.db", "cache.db-wal", "cache.db-shm", "bridge.lock"}
    assert modes == dict.fromkeys(modes, 0o600)


async def test_an_old_world_readable_store_is_tightened(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        directory = tmp_path / "store"
        first = Store(directory)
        await first.open()
        await first.commit({"k": "v"})
        await first.close()
        os.chmod(directory, 0o755)
        for entry in directory.iterdir():
            os.chmod(entry, 0o644)
        again = Store(directory)
        assert await again.open() == {"k": "v"}
        await again.close()
    finally:
        os.umask(old)
    assert mode(directory) == 0o700
    assert all(mode(entry) == 0o600 for entry in directory.iterdir())
