"""What `station-bridge check`, `outbox …` and `batch …` show and do for the person keeping the
box."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

import yaml

from .config import BridgeConfig
from .outbox import Change, Entry, Outbox, load_state
from .station import Batch
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
    """An outbox or batch command that cannot be done as asked; the message says why."""


# What each command changes, decided from the state alone: the same functions serve the bridge
# stopped (the store written here) and running (`bridge.live_admin`, through its `State`).


def plan_retry(outbox: Outbox, seqs: list[int]) -> Change:
    """Dead letters back in the queue. A refused 착공 comes back with the 완공 it blocked, so
    that the order of its batch holds."""

    def revive(seq: int) -> list[Entry]:
        entry = _dead_letter(outbox, seq)
        if (entry.dead_reason or {}).get("code") == "BLOCKED":
            raise AdminError(f"#{seq} waits for the request that blocked it: retry that one")
        blocked = [
            other
            for other in outbox.dead()
            if other.seq > seq
            and other.batch_id is not None
            and other.batch_id == entry.batch_id
            and (other.dead_reason or {}).get("code") == "BLOCKED"
        ]
        return [_revived(item) for item in [entry, *blocked]]

    return Change(entries=[item for seq in seqs for item in revive(seq)])


def plan_drop(outbox: Outbox, seqs: list[int]) -> Change:
    """Dead letters deleted for good."""
    return Change(dropped_entries=[_dead_letter(outbox, seq) for seq in seqs])


def plan_end_batch(batches: dict[str, Batch], outbox: Outbox, batch_id: str) -> Change:
    """A stuck batch ended, as an abort would end it: its 착공 not yet tried is dropped too (one
    already tried may be at the MES, and is delivered or dead-lettered as usual)."""
    batch = batches.get(batch_id)
    if batch is None:
        raise AdminError(f"there is no active batch {batch_id!r}")
    unsent = [e for e in outbox.pending() if e.batch_id == batch_id and e.attempts == 0]
    return Change(dropped_batches=[batch], dropped_entries=unsent)


def report_change(change: Change, *, out: TextIO) -> None:
    """What a command did, one line per record (the same words live and offline)."""
    lines = [f"back in the queue: {item.describe()}" for item in change.entries]
    lines += [f"ended: {_batch_line(batch)}" for batch in change.dropped_batches]
    dropped = "dropped (never sent)" if change.dropped_batches else "dropped"
    lines += [f"{dropped}: {item.describe()}" for item in change.dropped_entries]
    for line in lines:
        print(line, file=out)


async def change_stopped_bridge(
    config: BridgeConfig, plan: Callable[[dict[str, Batch], Outbox], Change]
) -> Change:
    """Apply a planned change to the store of a bridge that is not running (it holds the store
    while it runs: then the change goes through `bridge.live_admin`)."""
    store = Store(existing(config.store_dir))
    try:
        batches, outbox = load_state(await store.open())  # fails while a bridge has it open
        change = plan(batches, outbox)
        await store.commit(change.writes())
    finally:
        await store.close()
    return change


def show_batches(config: BridgeConfig, *, out: TextIO, as_json: bool) -> None:
    batches, _ = load_state(read_directory(config.store_dir))
    for batch in sorted(batches.values(), key=lambda b: b.started_at):
        if as_json:
            print(batch.model_dump_json(), file=out)
        else:
            print(_batch_line(batch), file=out)
    if not batches and not as_json:
        print("no active batches", file=out)


def _batch_line(batch: Batch) -> str:
    return (
        f"{batch.batch_id}  station {batch.station_id}  {batch.wip_id}  process {batch.process}"
        f"  started {batch.started_at:%Y-%m-%d %H:%M:%S}Z  {len(batch.measurements)} value(s)"
    )


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
