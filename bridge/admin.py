"""What `station-bridge check` and `station-bridge outbox …` show and do for the person keeping
the box."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TextIO

import yaml

from .config import BridgeConfig
from .mes import (
    CompleteProcess,
    ConvertToSerial,
    MesClient,
    MesError,
    MesErrorCode,
    WipStatus,
    WipTrace,
)
from .mes.instants import parse_instant, same_instant
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


async def _check_not_stale(config: BridgeConfig, entries: list[Entry]) -> None:
    """Ask the MES's trace whether anything newer than these requests was recorded since."""
    traces: dict[str, WipTrace | None] = {}
    async with MesClient(config.mes) as mes:
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


async def retry_dead(config: BridgeConfig, seqs: list[int], *, out: TextIO) -> None:
    """Put dead letters back in the queue (the bridge must be stopped: it holds the store).

    A refused 착공 comes back with the 완공 it blocked, so that the order of its batch holds.
    Nothing is put back when the MES has recorded something newer of the same WIP and process
    since (`stale_reason`), or cannot be asked.
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
        await _check_not_stale(config, change.entries)
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
