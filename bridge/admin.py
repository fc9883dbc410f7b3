"""What `station-bridge check` and `station-bridge outbox …` show and do for the person keeping
the box."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TextIO

import yaml

from .config import BridgeConfig
from .outbox import Change, Entry, Outbox, load_state
from .store import Store, existing, read_directory


def show_config(config: BridgeConfig, *, out: TextIO) -> None:
    """The effective configuration as YAML; secrets print as `**********`."""
    data = config.model_dump(mode="json")
    data["mes"]["url"] = config.mes.shown_url()
    data["mqtt"]["client_id"] = config.client_id
    print("# the effective configuration (file + STATION_BRIDGE_* environment)", file=out)
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="", file=out)


def show_outbox(config: BridgeConfig, *, out: TextIO, as_json: bool) -> None:
    batches, outbox = load_state(read_directory(config.store_dir))
    pending, dead = outbox.pending(), outbox.dead()
    if as_json:
        for entry in [*pending, *dead]:
            print(entry.model_dump_json(), file=out)
        return
    print(
        f"{len(pending)} pending, {len(dead)} dead-lettered, {len(batches)} active batch(es)",
        file=out,
    )
    for title, entries in (("pending", pending), ("dead letters", dead)):
        if entries:
            print(f"\n{title}:", file=out)
            for entry in entries:
                print(f"  {_line(entry)}", file=out)


def _line(entry: Entry) -> str:
    parts = [
        entry.describe(),
        f"station {entry.station_id}",
        f"batch {entry.batch_id or '-'}",
        f"attempts {entry.attempts}",
        f"queued {entry.enqueued_at:%Y-%m-%d %H:%M:%S}Z",
    ]
    if entry.next_attempt_at is not None and not entry.dead:
        parts.append(f"next {entry.next_attempt_at:%H:%M:%S}Z")
    reason = entry.dead_reason if entry.dead else entry.last_error
    if reason:
        parts.append(_reason(reason))
    return "  ".join(parts)


def _reason(reason: dict[str, Any]) -> str:
    detail = f": {reason['detail']}" if reason.get("detail") else ""
    return f"[{reason.get('code', '?')}{detail}]"


class AdminError(Exception):
    """An outbox command that cannot be done as asked; the message says why."""


async def retry_dead(config: BridgeConfig, seqs: list[int], *, out: TextIO) -> None:
    """Put dead letters back in the queue (the bridge must be stopped: it holds the store).

    A refused 착공 comes back with the 완공 it blocked, so that the order of its batch holds.
    """

    def revive(outbox: Outbox, seq: int) -> list[Entry]:
        entry = _dead_letter(outbox, seq)
        if (entry.dead_reason or {}).get("code") == "BLOCKED":
            raise AdminError(f"#{seq} waits for the request that blocked it: retry that one")
        blocked = [
            other
            for other in outbox.dead()
            if other.seq > seq
            and other.batch_uid is not None
            and other.batch_uid == entry.batch_uid
            and (other.dead_reason or {}).get("code") == "BLOCKED"
        ]
        return [_revived(item) for item in [entry, *blocked]]

    async with _stopped_bridge_store(config) as (store, outbox):
        change = Change(entries=[item for seq in seqs for item in revive(outbox, seq)])
        await store.commit(change.writes())
    for item in change.entries:
        print(f"back in the queue: {item.describe()}", file=out)


async def drop_dead(config: BridgeConfig, seqs: list[int], *, out: TextIO) -> None:
    """Delete dead letters for good (the bridge must be stopped)."""
    async with _stopped_bridge_store(config) as (store, outbox):
        change = Change(dropped_entries=[_dead_letter(outbox, seq) for seq in seqs])
        await store.commit(change.writes())
    for item in change.dropped_entries:
        print(f"dropped: {item.describe()}", file=out)


@contextlib.asynccontextmanager
async def _stopped_bridge_store(config: BridgeConfig) -> AsyncIterator[tuple[Store, Outbox]]:
    store = Store(existing(config.store_dir))
    try:
        _, outbox = load_state(await store.open())  # fails while a bridge has it open
        yield store, outbox
    finally:
        await store.close()


def _dead_letter(outbox: Outbox, seq: int) -> Entry:
    entry = outbox.get(seq)
    if entry is None:
        raise AdminError(f"there is no request #{seq} in the outbox")
    if not entry.dead:
        raise AdminError(f"#{seq} is not a dead letter: it is still waiting to be delivered")
    return entry


def _revived(entry: Entry) -> Entry:
    return entry.model_copy(
        update={
            "dead_at": None,
            "dead_reason": None,
            "last_error": entry.dead_reason,
            "next_attempt_at": None,
            "announced": True,  # its tablet already heard it failed: report on result/synced
        }
    )
