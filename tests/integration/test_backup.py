"""The online backup docs/install.md gives: `sqlite3 cache.db ".backup FILE"` while a bridge has
the store open and is writing to it yields a store that opens, with what was committed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bridge.adapters.store import Store

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 command")


async def test_a_backup_taken_while_the_store_is_open_restores(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    committed = {f"outbox/{seq:012d}": f'{{"seq": {seq}}}' for seq in range(1, 51)}
    try:
        await store.open()
        for key, value in committed.items():
            await store.commit({key: value})
        (tmp_path / "backup").mkdir()
        sqlite = await asyncio.create_subprocess_exec(
            "sqlite3",
            str(tmp_path / "store" / "cache.db"),
            f".backup '{tmp_path}/backup/cache.db'",
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(sqlite.communicate(), timeout=60)
        assert sqlite.returncode == 0, stderr
        await store.commit({"outbox/000000000051": '{"seq": 51}'})  # the bridge writes on
    finally:
        await store.close()

    restored = Store(tmp_path / "backup")
    try:
        assert await restored.open() == committed
    finally:
        await restored.close()
