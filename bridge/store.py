"""The bridge's disk: active batches and the outbox, in one diskcache (SQLite) directory.

Settings that make it a queue rather than a cache: nothing is ever evicted, every commit is synced
to disk before it returns (a power cut loses nothing that was acknowledged), and values are JSON
text, never pickles (readable with `sqlite3`, and safe to load). diskcache is synchronous, so all
of its calls run on one worker thread, in order, off the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import diskcache

_T = TypeVar("_T")

SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "sqlite_synchronous": 2,  # FULL: fsync on every commit
    # diskcache writes large values to files of their own, without fsync: keep every value in
    # SQLite, where the commit covers it.
    "disk_min_file_size": 1 << 30,
}


class StoreError(Exception):
    """The disk refused a write (full, read-only, corrupt): nothing of that change was kept."""


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
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = _exclusive(self.directory / "bridge.lock")
            self._cache = diskcache.Cache(str(self.directory), **SETTINGS)
            return read_all(self._cache, skip=skip)

        return await self._run(opened)

    async def commit(self, writes: Mapping[str, str | None]) -> None:
        """Write all of these (None deletes) in one transaction, synced before returning."""

        def write() -> None:
            cache = self._require()
            with cache.transact():
                for key, value in writes.items():
                    if value is None:
                        cache.delete(key)
                    else:
                        cache.set(key, value)

        if writes:
            await self._run(write)

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


def read_all(cache: diskcache.Cache, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    rows: dict[str, str] = {}
    for key in cache.iterkeys():
        if isinstance(key, str) and key.startswith(skip):
            continue
        value = cache.get(key)
        if isinstance(key, str) and isinstance(value, str):
            rows[key] = value
    return rows


def existing(directory: Path) -> Path:
    """The directory of a store that is there already (the admin commands must not make one)."""
    if not directory.is_dir():
        raise StoreError(f"{directory}: no bridge data here (is data_dir right?)")
    return directory


def read_directory(directory: Path) -> dict[str, str]:
    """What a store holds, for `station-bridge outbox list` (safe while the bridge runs)."""
    with diskcache.Cache(str(existing(directory)), **SETTINGS) as cache:
        return read_all(cache)
