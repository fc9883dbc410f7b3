"""The data directory's format on a real disk: a store written before the format was recorded is
migrated when a bridge opens it, and a store from a newer bridge is refused (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import diskcache

from bridge.adapters.store import FORMAT, FORMAT_KEY, SETTINGS, Store, StoreError, read_directory

# Rows no migration changes (tests/integration/test_old_store.py: those that move).
ROWS = {"meta/next_seq": "3", "meta/broker_session": '"seen"'}


def write_store(directory: Path, rows: dict[str, str]) -> None:
    """A store as a bridge left it, written with diskcache directly."""
    with diskcache.Cache(str(directory), **SETTINGS) as cache:
        for key, value in rows.items():
            cache.set(key, value)


def stored(directory: Path) -> dict[str, str]:
    with diskcache.Cache(str(directory), **SETTINGS) as cache:
        return {key: cache.get(key) for key in cache.iterkeys()}


async def test_a_store_without_a_format_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    write_store(tmp_path / "store", ROWS)
    store = Store(tmp_path / "store")
    try:
        assert await store.open() == ROWS
    finally:
        await store.close()
    assert stored(tmp_path / "store") == {**ROWS, FORMAT_KEY: str(FORMAT)}


async def test_a_new_store_records_its_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    try:
        assert await store.open() == {}
    finally:
        await store.close()
    assert stored(tmp_path / "store") == {FORMAT_KEY: str(FORMAT)}


async def test_a_newer_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    newer = {**ROWS, FORMAT_KEY: str(FORMAT + 1)}
    write_store(tmp_path / "store", newer)
    store = Store(tmp_path / "store")
    try:
        try:
            await store.open()
            raise AssertionError("a newer store was opened")
        except StoreError as error:
            assert "written by a newer station-bridge" in str(error)
            assert str(tmp_path / "store") in str(error)
    finally:
        await store.close()
    assert stored(tmp_path / "store") == newer
    try:
        read_directory(tmp_path / "store")
        raise AssertionError("outbox list read a newer store")
    except StoreError as error:
        assert "written by a newer station-bridge" in str(error)


def test_the_bridge_and_outbox_list_exit_2_on_a_newer_store(tmp_path: Path) -> None:
    write_store(tmp_path / "data" / "store", {**ROWS, FORMAT_KEY: str(FORMAT + 1)})
    config = tmp_path / "bridge.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nstations: [{{id: ST01}}]\n")
    for command in (["run"], ["outbox", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "written by a newer station-bridge" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
