"""The outbox's records and their order (pure: the disk is `bridge.adapters.store`).

Every MES request is an `Entry` from the moment it is decided until the MES gave a definite
outcome: delivered (the entry is removed) or refused for good (it stays, as a dead letter with its
reason). Entries of one WIP go out strictly in `seq` order; entries of different WIPs do not wait
for each other.
"""

from __future__ import annotations

import bisect
import itertools
import sys
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from bridge.core.batches import Batch
from bridge.core.domain import Result, UtcDatetime
from bridge.core.limits import Measured
from bridge.mes.models import CompleteProcess, ConvertToSerial, MesRequest, StartProcess


class Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    request: MesRequest
    station_id: str
    batch_id: str | None = None
    # The batch's own identity: batch ids are unique only among a station's active batches (a
    # rework may reuse one), so entries of one batch are found by this, never by `batch_id`.
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


# Batches are stored by their uid, never by their batch_id: two stations may use the same batch_id.
def batch_key(uid: str) -> str:
    return f"batch/{uid}"


def measurement_key(uid: str, name: str) -> str:
    return f"{_MEASUREMENT}{uid}/{name}"


_MEASUREMENT = "measurement/"


def _batch_rows(
    batch: Batch, names: Iterable[str], *, header: bool = True
) -> dict[str, str | None]:
    """A batch's header, and those of its measurements: each measurement is a row of its own, so
    that a reading costs one small write however many the batch already holds."""
    rows: dict[str, str | None] = {}
    if header:
        rows[batch_key(batch.uid)] = batch.model_dump_json(exclude={"measurements"})
    for name in names:
        rows[measurement_key(batch.uid, name)] = batch.measurements[name].model_dump_json()
    return rows


@dataclass
class Change:
    """Writes that must reach the disk together (one transaction), then the memory."""

    entries: list[Entry] = field(default_factory=list)
    dropped_entries: list[Entry] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    # A batch after new measurements, and their names: only those and its header are written.
    measured: list[tuple[Batch, list[str]]] = field(default_factory=list)
    # The same for measurements that left the header as it was (no new defect): only they are
    # written, a row each, not the header again with every reading.
    readings: list[tuple[Batch, list[str]]] = field(default_factory=list)
    dropped_batches: list[Batch] = field(default_factory=list)

    def updated_batches(self) -> list[Batch]:
        return [*self.batches, *(batch for batch, _ in [*self.measured, *self.readings])]

    def writes(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for batch in self.dropped_batches:
            out[batch_key(batch.uid)] = None
            out.update({measurement_key(batch.uid, name): None for name in batch.measurements})
        for entry in self.dropped_entries:
            out[entry.key()] = None
        for batch in self.batches:
            out.update(_batch_rows(batch, batch.measurements))
        for batch, names in self.measured:
            out.update(_batch_rows(batch, names))
        for batch, names in self.readings:
            out.update(_batch_rows(batch, names, header=False))
        for entry in self.entries:
            out[entry.key()] = entry.model_dump_json()
        return out


class _Indexed(NamedTuple):
    """What the indexes need of an entry, kept beside its text."""

    wip_id: str
    station_id: str
    batch_uid: str | None
    dead: bool
    attempts: int
    in_flight: bool


class Outbox:
    """Pending and dead-lettered entries, in order.

    Indexed so that what the bridge asks on every message, delivery report and status (a WIP's
    head, a station's counts, a batch's entries) costs O(1) or O(log n) however many wait:
    per-WIP lanes of pending seqs in order, per-station counters, pending seqs per batch. Only
    the listings (`__iter__`, `pending`, `dead`: the admin commands) sort everything.

    Each entry is kept as its compact JSON (as on disk), compressed (`_pack`): about 130 bytes,
    rather than a model's 3 KB: a long outage's 10,000 entries cost a few megabytes with their
    indexes, not tens of them. The entries read last (the running lanes' heads, mostly) are kept
    parsed, `_PARSED_LIMIT` at the most.
    """

    def __init__(self, entries: Iterable[Entry] = (), *, next_seq: int = 1) -> None:
        self._texts: dict[int, bytes] = {}  # compressed (`_pack`)
        self._indexed: dict[int, _Indexed] = {}
        self._parsed: OrderedDict[int, Entry] = OrderedDict()
        self._lanes: dict[str, list[int]] = {}  # WIP -> its pending seqs, ascending
        # batch_uid -> its pending seqs, ascending: a few each, and a list costs a third of a set
        self._by_batch: dict[str, list[int]] = {}
        self._pending: Counter[str] = Counter()  # station -> pending entries
        self._dead: Counter[str] = Counter()  # station -> dead letters
        self._dead_seqs: set[int] = set()
        for entry in entries:
            self.put(entry.seq, entry)
        self._parsed.clear()  # what loading went through is not what will be read first
        self._next_seq = max(next_seq, max(self._texts, default=0) + 1)

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
            self.put(entry.seq, None)
        for entry in change.entries:
            self.put(entry.seq, entry)

    def put(self, seq: int, entry: Entry | None) -> None:
        """Set (or, with None, remove) one entry as it was: undoing a change that did not reach
        the disk."""
        self._texts.pop(seq, None)
        self._parsed.pop(seq, None)
        old = self._indexed.pop(seq, None)
        if old is not None:
            self._unindex(seq, old)
        if entry is not None:
            self._texts[seq] = _pack(entry.model_dump_json().encode())
            indexed = _Indexed(
                entry.wip_id,
                sys.intern(entry.station_id),  # a handful of stations, thousands of entries
                entry.batch_uid,
                entry.dead,
                entry.attempts,
                entry.in_flight,
            )
            self._indexed[seq] = indexed
            self._index(seq, indexed)
            self._remember(entry)

    def _remember(self, entry: Entry) -> None:
        self._parsed[entry.seq] = entry
        self._parsed.move_to_end(entry.seq)
        if len(self._parsed) > _PARSED_LIMIT:
            self._parsed.popitem(last=False)

    def _index(self, seq: int, entry: _Indexed) -> None:
        if entry.dead:
            self._dead[entry.station_id] += 1
            self._dead_seqs.add(seq)
            return
        self._pending[entry.station_id] += 1
        lane = self._lanes.setdefault(entry.wip_id, [])
        if not lane or lane[-1] < seq:
            lane.append(seq)  # the usual case: a new entry goes last
        else:
            bisect.insort(lane, seq)
        if entry.batch_uid is not None:
            bisect.insort(self._by_batch.setdefault(entry.batch_uid, []), seq)

    def _unindex(self, seq: int, entry: _Indexed) -> None:
        if entry.dead:
            _decrement(self._dead, entry.station_id)
            self._dead_seqs.discard(seq)
            return
        _decrement(self._pending, entry.station_id)
        lane = self._lanes[entry.wip_id]
        if lane[0] == seq:
            del lane[0]  # the usual case: the head was delivered (lanes are short)
        else:
            del lane[bisect.bisect_left(lane, seq)]
        if not lane:
            del self._lanes[entry.wip_id]
        if entry.batch_uid is not None:
            seqs = self._by_batch[entry.batch_uid]
            seqs.remove(seq)
            if not seqs:
                del self._by_batch[entry.batch_uid]

    def __iter__(self) -> Iterator[Entry]:
        return (self._entry(seq) for seq in sorted(self._texts))

    def get(self, seq: int) -> Entry | None:
        return self._entry(seq) if seq in self._texts else None

    def _entry(self, seq: int) -> Entry:
        entry = self._parsed.get(seq)
        if entry is None:
            entry = Entry.model_validate_json(_unpack(self._texts[seq]))
        self._remember(entry)
        return entry

    def pending(self, limit: int | None = None) -> list[Entry]:
        """The pending entries in order (the oldest `limit` of them): only those are parsed."""
        seqs = (seq for seq in sorted(self._texts) if seq not in self._dead_seqs)
        return [self._entry(seq) for seq in itertools.islice(seqs, limit)]

    def dead(self, limit: int | None = None) -> list[Entry]:
        """The dead letters in order (the oldest `limit` of them): only those are parsed."""
        return [self._entry(seq) for seq in itertools.islice(sorted(self._dead_seqs), limit)]

    def pending_count(self, station_id: str | None = None) -> int:
        if station_id is None:
            return len(self._texts) - len(self._dead_seqs)
        return self._pending[station_id]

    def dead_count(self, station_id: str | None = None) -> int:
        if station_id is None:
            return len(self._dead_seqs)
        return self._dead[station_id]

    def stations(self) -> set[str]:
        """The stations that have pending entries or dead letters."""
        return {*self._pending, *self._dead}

    def head(self, wip_id: str) -> Entry | None:
        """The next entry of this WIP to deliver: nothing after it may go before it does."""
        lane = self._lanes.get(wip_id)
        return self._entry(lane[0]) if lane else None

    def lane(self, wip_id: str) -> list[Entry]:
        """This WIP's pending entries, in the order they go out."""
        return [self._entry(seq) for seq in self._lanes.get(wip_id, ())]

    def waiting_wips(self) -> set[str]:
        return set(self._lanes)

    def under_way(self) -> set[str]:
        """WIPs whose head is marked as being attempted (after a restart: the MES may still be at
        it). Read from the index: no entry is parsed."""
        return {wip for wip, seqs in self._lanes.items() if self._indexed[seqs[0]].in_flight}

    def stalled(self, wip_id: str) -> bool:
        """Whether this WIP's queue already failed an attempt (so a new entry waits behind it)."""
        head = self.head(wip_id)
        return head is not None and head.last_error is not None

    def same_batch_after(self, entry: Entry) -> list[Entry]:
        """Later pending entries of the same batch: they depend on this one."""
        return [other for other in self._batch(entry.batch_uid) if other.seq > entry.seq]

    def unattempted(self, batch_uid: str) -> list[Entry]:
        """Pending entries of this batch that were never tried: the MES knows nothing of them."""
        seqs = self._by_batch.get(batch_uid, ())
        return [self._entry(seq) for seq in seqs if self._indexed[seq].attempts == 0]

    def _batch(self, batch_uid: str | None) -> list[Entry]:
        if batch_uid is None:
            return []
        return [self._entry(seq) for seq in self._by_batch.get(batch_uid, ())]


# Enough for the heads of the lanes that run at once and what their reports read again.
_PARSED_LIMIT = 256

# Entries are alike: most of each one's JSON is field names and the same few values. Compressed
# with entries of each kind as zlib's preset dictionary, one costs about 130 bytes in memory
# instead of about 480 (a long outage's 10,000: 1.3 MB rather than 4.8), for ~15 us to pack and
# ~4 us to unpack. Raw deflate with a 4 KB window: no header, and a small compressor state.
_SAMPLE_AT = datetime(2026, 1, 1, tzinfo=UTC)
_LIKE_ENTRIES = b"".join(
    Entry(
        seq=1,
        request=request,
        station_id="S",
        batch_id="B",
        batch_uid="B",
        enqueued_at=_SAMPLE_AT,
        next_attempt_at=_SAMPLE_AT,
        last_error={"code": "NETWORK", "message": ""},
    )
    .model_dump_json()
    .encode()
    for request in (
        ConvertToSerial(wip_id="W", operator_id=1),
        CompleteProcess(
            wip_id="W",
            process=1,
            operator_id=1,
            result=Result.PASS,
            started_at=_SAMPLE_AT,
            completed_at=_SAMPLE_AT,
        ),
        StartProcess(wip_id="W", process=1, operator_id=1, started_at=_SAMPLE_AT),
    )
)
_WINDOW_BITS = -12


def _pack(text: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, _WINDOW_BITS, 2, zdict=_LIKE_ENTRIES)
    return packer.compress(text) + packer.flush()


def _unpack(packed: bytes) -> bytes:
    unpacker = zlib.decompressobj(_WINDOW_BITS, zdict=_LIKE_ENTRIES)
    return unpacker.decompress(packed) + unpacker.flush()


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


NEXT_SEQ_KEY = "meta/next_seq"


def load_state(rows: dict[str, str]) -> tuple[dict[str, Batch], Outbox]:
    """Active batches (by uid) and the outbox from what the store holds."""
    batches: dict[str, Batch] = {}
    measured: dict[str, dict[str, Measured]] = {}
    entries: list[str] = []
    for key, text in rows.items():
        if key.startswith("batch/"):
            batch = Batch.model_validate_json(text)
            batches[batch.uid] = batch
        elif key.startswith(_MEASUREMENT):
            uid, name = key[len(_MEASUREMENT) :].split("/", 1)
            measured.setdefault(uid, {})[name] = Measured.model_validate_json(text)
        elif key.startswith("outbox/"):
            entries.append(text)
    for uid, values in measured.items():
        if uid in batches:
            batches[uid] = batches[uid].model_copy(update={"measurements": values})
    # Parsed one at a time: the outbox keeps each as text, never all of them as models at once.
    parsed = (Entry.model_validate_json(text) for text in entries)
    return batches, Outbox(parsed, next_seq=int(rows.get(NEXT_SEQ_KEY, "1")))


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
