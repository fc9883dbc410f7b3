"""The bridge's disk: active batches and the outbox, in one diskcache (SQLite) directory.

Settings that make it a queue rather than a cache: nothing is ever evicted, every commit is synced
to disk before it returns (a power cut loses nothing that was acknowledged), and values are JSON
text, never pickles (readable with `sqlite3`, and safe to load). diskcache is synchronous, so all
of its calls run on one worker thread, in order, off the event loop.

The store holds operator ids, WIPs and measurements: its directory is 0700 and its files 0600,
whatever the umask (`private`).

The store records the format of its keys and values (`meta/format`). A bridge migrates an older
store when it opens it, and refuses a newer one: it would misread what a later version wrote.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import diskcache
from diskcache.core import DBNAME, MODE_RAW

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

FORMAT_KEY = "meta/format"
FORMAT = 2  # the format this bridge writes; docs/install.md says what changes it

Rows = Mapping[str, str]
Migration = Callable[[Rows], dict[str, str | None]]


def batches_by_uid(rows: Rows) -> dict[str, str | None]:
    """Format 1 to 2: batches are kept by their `uid`, not their `batch_id` (unique per station
    only from format 2 on), and every batch and every outbox entry of a batch has its uid.

    Format 1 kept `batch/{batch_id}` and `measurement/{batch_id}/{name}`; rows written before
    uids existed have none. A batch without one gets `legacy-{batch_id}`, the uid the bridges
    of format 1 gave it when they read it (and put on the entries they made for it since). An
    entry without one belongs with the entries of its station and batch id after the last 착공
    before it (a batch id may have been used again after its batch ended): each such run gets
    `before-uids-{seq of its first entry}`, but the run of a batch still active takes that
    batch's uid. Works on the JSON as stored, not on the models, which later formats change."""
    writes: dict[str, str | None] = {}
    active: dict[tuple[str, str], dict[str, Any]] = {}  # (station, batch_id) -> the batch
    for key, text in rows.items():
        if key.startswith("batch/"):
            batch = json.loads(text)
            batch_id = key.removeprefix("batch/")
            batch.setdefault("uid", f"legacy-{batch_id}")
            active[(batch.get("station_id", ""), batch_id)] = batch
            writes[key] = None
    # Runs of entries without a uid, in seq order (the keys are zero-padded).
    runs: dict[tuple[str, str], str] = {}  # (station, batch_id) -> its latest run
    open_start: dict[tuple[str, str], dict[str, Any]] = {}  # a 착공 its 완공 has not followed
    unnamed: list[tuple[str, dict[str, Any], str]] = []  # (key, entry, run)
    for key in sorted(k for k in rows if k.startswith("outbox/")):
        entry = json.loads(rows[key])
        if entry.get("batch_uid") is not None or entry.get("batch_id") is None:
            continue
        owner = (entry.get("station_id", ""), entry["batch_id"])
        kind = entry.get("request", {}).get("kind")
        if kind == "start" or owner not in runs:
            runs[owner] = f"before-uids-{entry['seq']}"
            open_start.pop(owner, None)
        if kind == "start":
            open_start[owner] = entry["request"]
        elif kind == "complete":
            open_start.pop(owner, None)
        unnamed.append((key, entry, runs[owner]))
    uid_of_run: dict[str, str] = {}
    for owner, start in open_start.items():
        batch = active.get(owner)
        if batch is not None and (batch.get("wip_id"), batch.get("process")) == (
            start.get("wip_id"),
            start.get("process"),
        ):
            uid_of_run[runs[owner]] = batch["uid"]
    for key, entry, run in unnamed:
        writes[key] = _json({**entry, "batch_uid": uid_of_run.get(run, run)})
    uids = {batch_id: batch["uid"] for (_, batch_id), batch in active.items()}
    for key, text in rows.items():
        if key.startswith("measurement/"):
            batch_id, name = key.removeprefix("measurement/").split("/", 1)
            writes[key] = None  # one without its batch is left over: nothing reads it
            if batch_id in uids:
                writes[f"measurement/{uids[batch_id]}/{name}"] = text
    for batch in active.values():
        writes[f"batch/{batch['uid']}"] = _json(batch)
    return writes


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# MIGRATIONS[n] brings a store from format n to n + 1: the writes to make (None deletes), given
# the rows `Store.open` read (not those it was told to skip: a migration that needs them reads
# them). Format 0 is a store from before the format was recorded; its layout is format 1's.
MIGRATIONS: dict[int, Migration] = {0: lambda rows: {}, 1: batches_by_uid}

SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "sqlite_synchronous": 2,  # FULL: fsync on every commit
    # diskcache writes large values to files of their own, without fsync: keep every value in
    # SQLite, where the commit covers it.
    "disk_min_file_size": 1 << 30,
    # The bridge reads the store once, at start, and keeps what it needs: SQLite's memory map
    # (64 MB by default) and page cache (32 MB) would keep up to the whole file resident after
    # that read, for nothing (bench/README.md, memory.py).
    "sqlite_mmap_size": 0,
    "sqlite_cache_size": 256,  # pages: 1 MB
}


class StoreError(Exception):
    """The disk refused a write (full, read-only, corrupt): nothing of that change was kept. Or
    the store is one this bridge cannot read (from a newer version)."""


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._cache: diskcache.Cache | None = None
        self._lock: int | None = None

    async def open(self, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
        """Open (or create) the store; returns everything it holds, key -> JSON text, but for
        the keys that start with one of `skip` (rows read only when needed).

        Only one process may have it open: two bridges on one outbox would each deliver it.
        """

        def opened() -> dict[str, str]:
            private(self.directory)
            self._lock = _exclusive(self.directory / "bridge.lock")
            self._cache = diskcache.Cache(str(self.directory), **SETTINGS)
            values_in_rows(self._cache)
            rows = read_all(self._cache, skip=skip)
            try:
                writes = upgrade(rows)
            except StoreError as error:
                raise StoreError(f"{self.directory}: {error}") from None
            if writes:
                write_rows(self._cache, writes)
            if rows and writes:
                found = stored_format(rows)
                _log.info("%s: migrated from format %d to %d", self.directory, found, FORMAT)
            return _applied(rows, writes)

        return await self._run(opened)

    async def commit(self, writes: Mapping[str, str | None]) -> None:
        """Write all of these (None deletes) in one transaction, synced before returning."""

        if writes:
            await self._run(lambda: write_rows(self._require(), writes))

    async def read(self, keys: Iterable[str]) -> dict[str, str]:
        """The values of these keys that are there."""
        wanted = list(keys)

        def read() -> dict[str, str]:
            cache = self._require()
            found = {key: cache.get(key) for key in wanted}
            return {key: value for key, value in found.items() if isinstance(value, str)}

        return await self._run(read) if wanted else {}

    async def close(self) -> None:
        if self._cache is not None:
            cache, self._cache = self._cache, None
            await self._run(cache.close)
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None
        self._executor.shutdown(wait=True)

    def _require(self) -> diskcache.Cache:
        if self._cache is None:
            raise StoreError("the store is not open")
        return self._cache

    async def _run(self, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except StoreError:
            raise
        except Exception as error:  # sqlite3 and OSError both surface here
            raise StoreError(f"{self.directory}: {type(error).__name__}: {error}") from error


def private(directory: Path) -> None:
    """Make the store's directory, and every missing one above it, 0700, and create the database
    file 0600 before diskcache opens it: SQLite gives its -wal and -shm files the database
    file's mode. A store made before this had umask modes: tightened here too."""
    missing = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask
    os.chmod(directory, 0o700)
    os.close(os.open(directory / DBNAME, os.O_RDWR | os.O_CREAT, 0o600))
    for entry in directory.iterdir():
        if entry.is_file():
            os.chmod(entry, 0o600)


def _exclusive(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path.parent} is in use by another station-bridge (stop it first, or give this "
            "one its own data_dir)"
        ) from None
    return fd


# What `Cache.set` stores for a str under SETTINGS: the text in the row (mode raw, no file, size
# 0), no expiry, no tag, stored and accessed now; the unique index on (key, raw) finds the row to
# update in place, as `set` does. Cache's triggers keep Settings' count and size right.
_UPSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    f" mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, {MODE_RAW}, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time, expire_time = NULL,"
    " access_time = excluded.access_time, access_count = 0, tag = NULL, size = 0,"
    f" mode = {MODE_RAW}, filename = NULL, value = excluded.value"
)
_DELETE = "DELETE FROM Cache WHERE key = ? AND raw = 1"


def write_rows(cache: diskcache.Cache, writes: Mapping[str, str | None]) -> None:
    """Write these rows (None deletes) in one transaction, as `Cache.set` and `Cache.delete`
    would, synced before returning. The store must hold no value in a file (`values_in_rows`).

    Straight into diskcache's own table, with two statements for the whole group: `set` and
    `delete` cost 30-47 µs of Python per row, holding the GIL the event loop needs (issue 11).
    The rows are those `set` writes, so diskcache (and every reader of the store) reads them as
    before. diskcache's own transaction and connection (`_con` is private: read against 5.6.3,
    and pyproject.toml keeps diskcache below 6) bring BEGIN IMMEDIATE, the rollback of the whole
    group on any error and the FULL fsync of SETTINGS. A text of 2**30 characters or more,
    which `set` would put in a file, is refused by SQLite here."""
    now = time.time()
    with cache.transact():
        con = cache._con
        con.executemany(_DELETE, [(key,) for key, value in writes.items() if value is None])
        con.executemany(
            _UPSERT, [(key, now, now, value) for key, value in writes.items() if value is not None]
        )


def values_in_rows(cache: diskcache.Cache) -> None:
    """Move the values a store from before SETTINGS kept in files of their own (over 32 KB)
    into their rows: `set` now keeps them there, and removes the file once committed.
    `write_rows` would leave such a file behind (`Cache.check` reports it)."""
    in_files = "SELECT key FROM Cache WHERE filename IS NOT NULL AND raw = 1"
    for (key,) in cache._con.execute(in_files).fetchall():
        value = cache.get(key)
        if value is not None:  # None: its file is gone already
            cache.set(key, value)


def read_all(cache: diskcache.Cache, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    rows: dict[str, str] = {}
    for key in cache.iterkeys():
        if isinstance(key, str) and key.startswith(skip):
            continue
        value = cache.get(key)
        if isinstance(key, str) and isinstance(value, str):
            rows[key] = value
    return rows


def stored_format(rows: Rows) -> int:
    """The format of a store holding `rows` (0: from before the format was recorded)."""
    text = rows.get(FORMAT_KEY, "0")
    if not text.isdigit():
        raise StoreError(f"{FORMAT_KEY} is {text!r}, not a format number: is this a bridge store?")
    return int(text)


def upgrade(
    rows: Rows, *, current: int = FORMAT, migrations: Mapping[int, Migration] = MIGRATIONS
) -> dict[str, str | None]:
    """The writes that bring a store holding `rows` to format `current` (none when it is)."""
    found = stored_format(rows) if rows else current  # an empty store is new
    if found > current:
        raise StoreError(
            f"the data is in format {found}, written by a newer station-bridge; this one reads "
            f"format {current} at most. Run the newer version again (or restore the backup taken "
            "before upgrading)"
        )
    if found == current and FORMAT_KEY in rows:
        return {}
    writes: dict[str, str | None] = {}
    for version in range(found, current):
        writes.update(migrations[version](_applied(rows, writes)))
    writes[FORMAT_KEY] = str(current)
    return writes


def _applied(rows: Rows, writes: Mapping[str, str | None]) -> dict[str, str]:
    """The rows after the writes, without the format (the store's business, not the state's)."""
    result = {key: value for key, value in rows.items() if key not in writes}
    result.update({key: value for key, value in writes.items() if value is not None})
    result.pop(FORMAT_KEY, None)
    return result


def existing(directory: Path) -> Path:
    """The directory of a store that is there already (the admin commands must not make one)."""
    if not directory.is_dir():
        raise StoreError(f"{directory}: no bridge data here (is data_dir right?)")
    return directory


def read_directory(directory: Path) -> dict[str, str]:
    """What a store holds, for `station-bridge outbox list` (safe while the bridge runs). An older
    store is read as if migrated, without writing to it."""
    with diskcache.Cache(str(existing(directory)), **SETTINGS) as cache:
        rows = read_all(cache)
    try:
        return _applied(rows, upgrade(rows))
    except StoreError as error:
        raise StoreError(f"{directory}: {error}") from None
