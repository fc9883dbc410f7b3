"""bridge.adapters.store writes its rows into diskcache's table itself (`write_rows`): on a real
SQLite file, the rows are those `Cache.set` and `Cache.delete` leave, read back by plain
diskcache, with its count and size right, and a group that fails leaves nothing."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import diskcache
import pytest
from diskcache.core import DBNAME
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.store import FORMAT, FORMAT_KEY, SETTINGS, Store, StoreError, read_all
from bridge.adapters.store import write_rows as new_path

BIG = "측정" * 300_000  # 1.2 MB of UTF-8
BEFORE = {"batch/u1": '{"wip_id":"W1"}', "outbox/0001": '{"seq":1}', "meta/next_seq": "2"}
GROUP: dict[str, str | None] = {
    "batch/u1": '{"wip_id":"W1","defects":["스크래치"]}',  # an update
    "outbox/0001": None,  # a delete of a row that is there
    "outbox/0009": None,  # ... and of one that is not
    "measurement/u1/토크": '{"value":1.5,"note":"착공 ✓ 🚀"}',
    "measurement/u1/big": f'"{BIG}"',
}
AFTER = {
    "batch/u1": '{"wip_id":"W1","defects":["스크래치"]}',
    "meta/next_seq": "2",
    "measurement/u1/토크": '{"value":1.5,"note":"착공 ✓ 🚀"}',
    "measurement/u1/big": f'"{BIG}"',
}


def old_path(cache: diskcache.Cache, writes: Mapping[str, str | None]) -> None:
    """How the store wrote a group before: diskcache's own calls, row by row."""
    with cache.transact():
        for key, value in writes.items():
            if value is None:
                cache.delete(key)
            else:
                cache.set(key, value)


def table(directory: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every column of every row but the rowid and the times, and diskcache's own counters."""
    with sqlite3.connect(directory / DBNAME) as con:
        rows = con.execute(
            "SELECT key, raw, expire_time, access_count, tag, size, mode, filename, value"
            " FROM Cache ORDER BY key"
        ).fetchall()
        counters = con.execute(
            "SELECT key, value FROM Settings WHERE key IN ('count', 'size')"
        ).fetchall()
    con.close()
    return rows, sorted(counters)


def problems(cache: diskcache.Cache) -> list[str]:
    """What `Cache.check` finds, but for the bridge's lock file, which diskcache does not know."""
    return [str(w.message) for w in cache.check() if not str(w.message).endswith("bridge.lock")]


async def test_a_group_reads_back_through_plain_diskcache(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = Store(directory)
    await store.open()
    try:
        await store.commit(BEFORE)
        started = time.time()
        await store.commit(GROUP)
        ended = time.time()
    finally:
        await store.close()
    with diskcache.Cache(str(directory)) as cache:
        assert {key: cache.get(key) for key in [*GROUP, *BEFORE]} == {
            **dict.fromkeys([*GROUP, *BEFORE]),
            **AFTER,
        }
        assert read_all(cache) == {**AFTER, FORMAT_KEY: str(FORMAT)}
        assert len(cache) == len(AFTER) + 1
        assert problems(cache) == []
    with sqlite3.connect(directory / DBNAME) as con:
        times = con.execute(
            "SELECT store_time, access_time FROM Cache WHERE key IN (?, ?)",
            ("batch/u1", "measurement/u1/big"),
        ).fetchall()
    con.close()
    assert all(started <= stored == accessed <= ended for stored, accessed in times)


def test_a_group_leaves_the_table_as_set_and_delete_did(tmp_path: Path) -> None:
    tables = []
    for name, path in [("old", old_path), ("new", new_path)]:
        with diskcache.Cache(str(tmp_path / name), **SETTINGS) as cache:
            path(cache, BEFORE)
            # a row with an expiry and a tag (the bridge sets neither): an update drops both
            cache.set("batch/u1", "{}", expire=3600, tag="old")
            path(cache, GROUP)
        tables.append(table(tmp_path / name))
    assert tables[0] == tables[1]
    assert tables[1][1] == [("count", len(AFTER)), ("size", 0)]


KEYS = st.sampled_from(["batch/u1", "batch/u2", "outbox/0001", "measurement/u1/토크", "meta/x"])
GROUPS = st.lists(st.dictionaries(KEYS, st.none() | st.text(max_size=40)), max_size=6)


@settings(max_examples=40, deadline=None)
@given(groups=GROUPS)
def test_any_groups_leave_the_table_as_set_and_delete_did(
    groups: list[dict[str, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        tables = []
        for name, path in [("old", old_path), ("new", new_path)]:
            with diskcache.Cache(str(Path(scratch) / name), **SETTINGS) as cache:
                for group in groups:
                    path(cache, group)
                assert problems(cache) == []
            tables.append(table(Path(scratch) / name))
        assert tables[0] == tables[1]


async def test_a_group_that_fails_midway_leaves_nothing_of_itself(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = Store(directory)
    await store.open()
    try:
        await store.commit(BEFORE)
        before = table(directory)
        with pytest.raises(StoreError, match="surrogates not allowed"):
            # a delete and an upsert are written before the last row fails to encode
            await store.commit({"outbox/0001": None, "batch/u2": "{}", "batch/u3": "\ud800"})
        assert table(directory) == before
    finally:
        await store.close()
    with diskcache.Cache(str(directory)) as cache:
        assert read_all(cache) == {**BEFORE, FORMAT_KEY: str(FORMAT)}
        assert problems(cache) == []


async def test_values_an_old_store_kept_in_files_move_into_their_rows(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    large = '"' + "x" * 40_000 + '"'  # over diskcache's default 32 KB: a file of its own
    with diskcache.Cache(str(directory)) as cache:  # as bridges before SETTINGS had it
        for key in ["meta/a", "meta/b", "meta/c"]:
            cache.set(key, large)
    assert any(entry.is_dir() for entry in directory.iterdir())
    store = Store(directory)
    try:
        assert await store.open() == dict.fromkeys(["meta/a", "meta/b", "meta/c"], large)
        await store.commit({"meta/a": "{}", "meta/b": None})
    finally:
        await store.close()
    assert sorted(entry.name for entry in directory.iterdir() if entry.is_dir()) == []
    with diskcache.Cache(str(directory)) as cache:
        assert read_all(cache) == {"meta/a": "{}", "meta/c": large, FORMAT_KEY: str(FORMAT)}
        assert len(cache) == 3
        assert problems(cache) == []
    assert table(directory)[1] == [("count", 3), ("size", 0)]
