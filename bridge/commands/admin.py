"""What `station-bridge check`, `outbox …` and `batch …` show and do for the person keeping the
box."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import yaml

from bridge.adapters.store import Store, existing, read_directory
from bridge.config import BridgeConfig
from bridge.core.batches import Batch
from bridge.core.outbox import Change, Entry, Outbox, load_state
from bridge.mes import (
    CompleteProcess,
    ConvertToSerial,
    MesClient,
    MesError,
    MesErrorCode,
    WipStatus,
    WipTrace,
)
from bridge.mes.instants import parse_instant, same_instant


def show_config(config: BridgeConfig, *, out: TextIO) -> None:
    """The effective configuration as YAML; secrets print as `**********`."""
    data = config.model_dump(mode="json")
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


def stale_reason(entry: Entry, trace: WipTrace) -> str | None:
    """Why replaying this dead letter would undo something newer at the MES, or None.

    The MES keeps no order of its own: a FAIL replayed after a newer PASS of the same process
    would leave the WIP FAILED. So a request is stale when the MES's trace holds a completion of
    its process at or after the request's own time (a completion for the very instant is the
    request itself, already recorded), or the WIP is converted.
    """
    request = entry.request
    if trace.status is WipStatus.CONVERTED or trace.serial_id is not None:
        done = "it is" if isinstance(request, ConvertToSerial) else "the WIP is"
        return f"{done} already converted to a serial number at the MES"
    if isinstance(request, ConvertToSerial):
        return None
    since = request.completed_at if isinstance(request, CompleteProcess) else request.started_at
    for record in trace.process_history:
        if record.process_number != request.process or record.complete_time is None:
            continue
        parsed = parse_instant(record.complete_time)
        if same_instant(since, record.complete_time) or (parsed and parsed[0] > since):
            what = f"{(record.result or '?').upper()} of process {request.process}"
            return (
                f"the MES holds a {what} completed at {record.complete_time}, not older than "
                f"this request ({since.isoformat()}): replaying it would put an older record "
                "after a newer one"
            )
    return None


async def check_alone(config: BridgeConfig, change: Change) -> None:
    """`check_not_stale` for a stopped bridge, with a client of this process's own that paces on
    the bridge's send log: the MES counts these trace reads against the budget the bridge
    resumes with."""
    async with MesClient(config.mes, send_log=config.mes_send_log) as mes:
        await check_not_stale(mes, change)


async def check_not_stale(mes: MesClient, change: Change) -> None:
    """Refuse a retry (AdminError) when the MES's trace holds something newer than a request it
    puts back (`stale_reason`), or cannot be asked."""
    entries = change.entries
    traces: dict[str, WipTrace | None] = {}
    for entry in entries:
        if entry.wip_id not in traces:
            try:
                traces[entry.wip_id] = await mes.trace(entry.wip_id)
            except MesError as error:
                if error.code is not MesErrorCode.WIP_NOT_FOUND:
                    raise AdminError(
                        f"cannot check #{entry.seq} against the MES's trace of "
                        f"{entry.wip_id} ({error}); nothing was changed"
                    ) from error
                traces[entry.wip_id] = None  # nothing recorded: the MES will refuse it
        trace = traces[entry.wip_id]
        reason = None if trace is None else stale_reason(entry, trace)
        if reason is not None:
            raise AdminError(
                f"{entry.describe()} is not put back: {reason}. "
                "Drop it (outbox drop) if it is no longer wanted"
            )


# What each command changes, decided from the state alone: the same functions serve the bridge
# stopped (the store written here) and running (`bridge.commands.live_admin`, through its `State`).


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
            and other.batch_uid is not None
            and other.batch_uid == entry.batch_uid
            and (other.dead_reason or {}).get("code") == "BLOCKED"
        ]
        return [_revived(item) for item in [entry, *blocked]]

    return Change(entries=[item for seq in seqs for item in revive(seq)])


def plan_drop(outbox: Outbox, seqs: list[int]) -> Change:
    """Dead letters deleted for good."""
    return Change(dropped_entries=[_dead_letter(outbox, seq) for seq in seqs])


def plan_end_batch(
    batches: dict[str, Batch], outbox: Outbox, batch_id: str, station_id: str | None = None
) -> Change:
    """A stuck batch ended, as an abort would end it: its 착공 not yet tried is dropped too (one
    already tried may be at the MES, and is delivered or dead-lettered as usual). `station_id`
    says whose, needed only when two stations use the same batch id."""
    named = [
        batch
        for batch in batches.values()
        if batch.batch_id == batch_id and station_id in (None, batch.station_id)
    ]
    if not named:
        where = f" on station {station_id}" if station_id is not None else ""
        raise AdminError(f"there is no active batch {batch_id!r}{where}")
    if len(named) > 1:
        stations = ", ".join(sorted(batch.station_id for batch in named))
        raise AdminError(
            f"stations {stations} each have an active batch {batch_id!r}: say which with --station"
        )
    batch = named[0]
    return Change(dropped_batches=[batch], dropped_entries=outbox.unattempted(batch.uid))


def report_change(change: Change, *, out: TextIO) -> None:
    """What a command did, one line per record (the same words live and offline)."""
    lines = [f"back in the queue: {item.describe()}" for item in change.entries]
    lines += [f"ended: {_batch_line(batch)}" for batch in change.dropped_batches]
    dropped = "dropped (never sent)" if change.dropped_batches else "dropped"
    lines += [f"{dropped}: {item.describe()}" for item in change.dropped_entries]
    for line in lines:
        print(line, file=out)


async def change_stopped_bridge(
    config: BridgeConfig,
    plan: Callable[[dict[str, Batch], Outbox], Change],
    *,
    check: Callable[[Change], Awaitable[None]] | None = None,
) -> Change:
    """Apply a planned change to the store of a bridge that is not running (it holds the store
    while it runs: then the change goes through `bridge.commands.live_admin`). `check` may refuse
    the change (AdminError) before anything is written."""
    store = Store(existing(config.store_dir))
    try:
        batches, outbox = load_state(await store.open())  # fails while a bridge has it open
        change = plan(batches, outbox)
        if check is not None:
            await check(change)
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
