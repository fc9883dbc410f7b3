"""The outbox's records and their order (pure: the disk is `bridge.store`).

Every MES request is an `Entry` from the moment it is decided until the MES gave a definite
outcome: delivered (the entry is removed) or refused for good (it stays, as a dead letter with its
reason). Entries of one WIP go out strictly in `seq` order; entries of different WIPs do not wait
for each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from .mes.models import MesRequest, UtcDatetime
from .results import Measured
from .station import Batch


class Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    request: MesRequest
    station_id: str
    batch_id: str | None = None
    # The batch's own identity: batch ids are unique only among active batches (a rework may
    # reuse one), so entries of one batch are found by this, never by `batch_id`.
    batch_uid: str | None = None
    enqueued_at: UtcDatetime
    attempts: int = 0
    # An attempt was under way (or its answer was lost): the MES may hold the request already,
    # so the next attempt asks the MES first instead of sending blindly.
    in_flight: bool = False
    maybe_applied: bool = False
    next_attempt_at: UtcDatetime | None = None
    last_error: dict[str, Any] | None = None
    # The tablet was already told this went to the queue (…_OFFLINE): report its delivery on
    # `result/synced` rather than as a live answer.
    announced: bool = False
    dead_at: UtcDatetime | None = None
    dead_reason: dict[str, Any] | None = None
    # Something the tablet should know about how the request was made (a station clock that was
    # ahead of the bridge's): carried on its outcomes.
    note: str | None = None

    @property
    def wip_id(self) -> str:
        return self.request.wip_id

    @property
    def action(self) -> str:
        return self.request.kind

    @property
    def dead(self) -> bool:
        return self.dead_at is not None

    def key(self) -> str:
        return f"outbox/{self.seq:012d}"

    def describe(self) -> str:
        request = self.request
        process = f" process {request.process}" if hasattr(request, "process") else ""
        return f"#{self.seq} {request.kind}{process} {request.wip_id}"


def batch_key(batch_id: str) -> str:
    return f"batch/{batch_id}"


def measurement_key(batch_id: str, name: str) -> str:
    return f"{_MEASUREMENT}{batch_id}/{name}"


_MEASUREMENT = "measurement/"


def _batch_rows(batch: Batch, names: Iterable[str]) -> dict[str, str | None]:
    """A batch's header, and those of its measurements: each measurement is a row of its own, so
    that a reading costs one small write however many the batch already holds."""
    rows: dict[str, str | None] = {
        batch_key(batch.batch_id): batch.model_dump_json(exclude={"measurements"})
    }
    for name in names:
        rows[measurement_key(batch.batch_id, name)] = batch.measurements[name].model_dump_json()
    return rows


@dataclass
class Change:
    """Writes that must reach the disk together (one transaction), then the memory."""

    entries: list[Entry] = field(default_factory=list)
    dropped_entries: list[Entry] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    # A batch after new measurements, and their names: only those are written.
    measured: list[tuple[Batch, list[str]]] = field(default_factory=list)
    dropped_batches: list[Batch] = field(default_factory=list)

    def updated_batches(self) -> list[Batch]:
        return [*self.batches, *(batch for batch, _ in self.measured)]

    def writes(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for batch in self.dropped_batches:
            out[batch_key(batch.batch_id)] = None
            out.update({measurement_key(batch.batch_id, name): None for name in batch.measurements})
        for entry in self.dropped_entries:
            out[entry.key()] = None
        for batch in self.batches:
            out.update(_batch_rows(batch, batch.measurements))
        for batch, names in self.measured:
            out.update(_batch_rows(batch, names))
        for entry in self.entries:
            out[entry.key()] = entry.model_dump_json()
        return out


class Outbox:
    """Pending and dead-lettered entries, in order."""

    def __init__(self, entries: Iterable[Entry] = (), *, next_seq: int = 1) -> None:
        self._entries = {entry.seq: entry for entry in entries}
        self._next_seq = max(next_seq, max(self._entries, default=0) + 1)

    def new_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    @property
    def next_seq(self) -> int:
        """Kept on disk too, so that a number never names two requests (logs, `outbox list`)."""
        return self._next_seq

    def apply(self, change: Change) -> None:
        for entry in change.dropped_entries:
            self._entries.pop(entry.seq, None)
        for entry in change.entries:
            self._entries[entry.seq] = entry

    def put(self, seq: int, entry: Entry | None) -> None:
        """Set (or, with None, remove) one entry as it was: undoing a change that did not reach
        the disk."""
        if entry is None:
            self._entries.pop(seq, None)
        else:
            self._entries[seq] = entry

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.seq))

    def get(self, seq: int) -> Entry | None:
        return self._entries.get(seq)

    def pending(self) -> list[Entry]:
        return [entry for entry in self if not entry.dead]

    def dead(self) -> list[Entry]:
        return [entry for entry in self if entry.dead]

    def pending_count(self, station_id: str | None = None) -> int:
        return sum(
            1
            for entry in self._entries.values()
            if not entry.dead and (station_id is None or entry.station_id == station_id)
        )

    def head(self, wip_id: str) -> Entry | None:
        """The next entry of this WIP to deliver: nothing after it may go before it does."""
        return next((e for e in self if not e.dead and e.wip_id == wip_id), None)

    def waiting_wips(self) -> set[str]:
        return {entry.wip_id for entry in self._entries.values() if not entry.dead}

    def stalled(self, wip_id: str) -> bool:
        """Whether this WIP's queue already failed an attempt (so a new entry waits behind it)."""
        head = self.head(wip_id)
        return head is not None and head.last_error is not None

    def same_batch_after(self, entry: Entry) -> list[Entry]:
        """Later pending entries of the same batch: they depend on this one."""
        if entry.batch_uid is None:
            return []
        return [
            other
            for other in self
            if not other.dead and other.seq > entry.seq and other.batch_uid == entry.batch_uid
        ]

    def unattempted(self, batch_uid: str) -> list[Entry]:
        """Pending entries of this batch that were never tried: the MES knows nothing of them."""
        return [
            entry
            for entry in self
            if not entry.dead and entry.batch_uid == batch_uid and entry.attempts == 0
        ]


NEXT_SEQ_KEY = "meta/next_seq"


def load_state(rows: dict[str, str]) -> tuple[dict[str, Batch], Outbox]:
    """Active batches and the outbox from what the store holds."""
    batches: dict[str, Batch] = {}
    measured: dict[str, dict[str, Measured]] = {}
    entries: list[Entry] = []
    for key, text in rows.items():
        if key.startswith("batch/"):
            batch = Batch.model_validate_json(text)
            batches[batch.batch_id] = batch
        elif key.startswith(_MEASUREMENT):
            batch_id, name = key[len(_MEASUREMENT) :].split("/", 1)
            measured.setdefault(batch_id, {})[name] = Measured.model_validate_json(text)
        elif key.startswith("outbox/"):
            entries.append(Entry.model_validate_json(text))
    for batch_id, values in measured.items():
        if batch_id in batches:
            batches[batch_id] = batches[batch_id].model_copy(update={"measurements": values})
    return batches, Outbox(entries, next_seq=int(rows.get(NEXT_SEQ_KEY, "1")))


def new_entry(
    outbox: Outbox,
    request: MesRequest,
    *,
    station_id: str,
    batch: Batch | None,
    now: datetime,
    announced: bool = False,
    note: str | None = None,
) -> Entry:
    return Entry(
        seq=outbox.new_seq(),
        request=request,
        station_id=station_id,
        batch_id=batch.batch_id if batch else None,
        batch_uid=batch.uid if batch else None,
        enqueued_at=now,
        announced=announced,
        note=note,
    )
