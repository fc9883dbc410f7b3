"""Batches: what runs on a station between 착공 and 완공 (pure: no clock, no disk, no sockets).

A batch is one WIP on one process at one station. The functions here take the active batches and
an inbound payload and return the new batch, the 완공 to send, or a `Problem` saying why not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_serializer,
)

from bridge.config import BatchesConfig, StationConfig
from bridge.core.domain import Result, UtcDatetime, compact_json, format_utc
from bridge.core.limits import Measured, decide, unique
from bridge.core.payloads import BatchComplete, BatchStart
from bridge.core.problems import Problem, ProblemCode
from bridge.mes.models import CompleteProcess, MesRequest


class Gathered(Mapping[str, Measured]):
    """A batch's measurements as `record` keeps them: read like the dict `{**old, **new}` would
    be (a name sent again keeps its first place and takes its latest value), and as immutable,
    but adding to it costs about √n, not n.

    A copy of every value the batch held, per message, made a measurement cost more the more its
    batch held (each copy touches every key and value, and frees the last copy): ~40 µs more at
    a few hundred. Here the latest values sit in a small dict beside a large one that every
    version since the last merge shares, read only; the small one is merged in once it outgrows
    √n of the large."""

    __slots__ = ("_len", "_recent", "_shared")

    def __init__(self, shared: dict[str, Measured], recent: dict[str, Measured], n: int) -> None:
        """Made by `of` and `with_values` only: `n` is how many names the two hold together.
        Neither dict is changed once given here: other versions may hold them too."""
        self._shared = shared
        self._recent = recent
        self._len = n

    @classmethod
    def of(cls, values: Mapping[str, Measured]) -> Gathered:
        return values if isinstance(values, Gathered) else cls(dict(values), {}, len(values))

    def with_values(self, values: Mapping[str, Measured]) -> Gathered:
        n = self._len
        for name in values:
            if name not in self:
                n += 1
        recent = {**self._recent, **values}
        if len(recent) ** 2 > len(self._shared):
            return Gathered({**self._shared, **recent}, {}, n)
        return Gathered(self._shared, recent, n)

    def __getitem__(self, name: str) -> Measured:
        got = self._recent.get(name)
        return self._shared[name] if got is None else got

    def __contains__(self, name: object) -> bool:
        return name in self._recent or name in self._shared

    def __iter__(self) -> Iterator[str]:
        yield from self._shared
        yield from (name for name in self._recent if name not in self._shared)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"Gathered({dict(self)!r})"


class Batch(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The station's name for it: unique among the station's active batches only (another
    # station may use the same one, and a rework may reuse it).
    batch_id: str
    # Unique on the bridge for ever: what the bridge keeps the batch by, in memory and on disk,
    # and what the outbox's entries of this batch are found by.
    uid: str
    station_id: str
    wip_id: str
    process: int
    operator_id: int
    equipment_id: int | None = None
    started_at: UtcDatetime
    # A dict when validated (from disk, say), a `Gathered` once `record` added to it.
    measurements: Mapping[str, Measured] = Field(default_factory=dict)
    defects: list[str] = Field(default_factory=list)
    # Set when the station's clock was ahead and the bridge's time was used instead.
    clock_note: str | None = None

    # What the measurements and defects add to the 완공's JSON: kept up to date by `record`, so
    # that bounding a batch costs what a message adds, not what the batch holds. Read and written
    # through `_sizes`, never as attributes.
    _gathered_bytes: int | None = PrivateAttr(default=None)
    _envelope_bytes: int | None = PrivateAttr(default=None)  # the rest: fixed for a batch

    def __eq__(self, other: object) -> bool:
        # The cached sizes are not part of what a batch is: one loaded from disk equals the one
        # that was written.
        if not isinstance(other, Batch):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @field_serializer("measurements", mode="wrap")
    def _plain(self, value: Mapping[str, Measured], plain: SerializerFunctionWrapHandler) -> Any:
        return plain(dict(value))  # pydantic writes a dict field from a dict only

    def gathered_bytes(self) -> int:
        sizes = _sizes(self)
        gathered: int | None = sizes[_GATHERED]
        if gathered is None:
            gathered = sum(
                _entry_bytes(name, got.value) for name, got in self.measurements.items()
            ) + sum(_item_bytes(code) for code in self.defects)
            sizes[_GATHERED] = gathered
        return gathered

    def summary(self) -> dict[str, Any]:
        """The batch as the station's status topic shows it."""
        return {
            "batch_id": self.batch_id,
            "wip_id": self.wip_id,
            "process_id": self.process,
            "started_at": format_utc(self.started_at),
            "measurements": len(self.measurements),
        }


_GATHERED = "_gathered_bytes"
_ENVELOPE = "_envelope_bytes"


def _sizes(batch: Batch) -> dict[str, Any]:
    """The batch's cached sizes: pydantic's dict of its private attributes. Read here rather than
    as `batch._gathered_bytes`, because pydantic's `__getattr__` costs ~2 µs a read (it probes
    the attribute for a descriptor, and the probe raises inside), several reads a measurement."""
    private = batch.__pydantic_private__
    assert private is not None  # a model with private attributes always has the dict
    return private


def open_batch(
    active: Iterable[Batch],
    station: StationConfig,
    start: BatchStart,
    *,
    batch_id: str,
    uid: str,
    now: datetime,
) -> Batch | Problem:
    """A new batch for a scanned WIP, unless the station or the WIP cannot take it now. `now`
    is when the bridge received the start."""
    if station.processes is not None and start.process_id not in station.processes:
        return Problem(
            ProblemCode.PROCESS_NOT_AT_STATION,
            f"station {station.id} runs processes {station.processes}, not {start.process_id}",
        )
    # Another station's batch is named to no one but that station: its ids are its own business
    # (it may use the same ones), and only a WIP cannot be in two places.
    for batch in active:
        if batch.station_id == station.id and batch.batch_id == batch_id:
            return Problem(
                ProblemCode.DUPLICATE_BATCH, f"batch {batch_id} is already running on this station"
            )
        if batch.wip_id == start.wip_id:
            where = (
                f"batch {batch.batch_id} (process {batch.process}) here"
                if batch.station_id == station.id
                else "a batch of another station"
            )
            return Problem(
                ProblemCode.WIP_BUSY,
                f"{start.wip_id} is in {where}: complete or abort it first",
            )
    started_at, note = station_time(
        start.started_at, now, max_skew_s=station.max_clock_skew_s, name="started_at"
    )
    return Batch(
        batch_id=batch_id,
        uid=uid,
        station_id=station.id,
        wip_id=start.wip_id,
        process=start.process_id,
        operator_id=start.operator_id,
        equipment_id=start.equipment_id or station.equipment_id,
        started_at=started_at,
        clock_note=note,
    )


def station_time(
    stated: datetime | None, received: datetime, *, max_skew_s: float, name: str
) -> tuple[datetime, str | None]:
    """The time to record for something a station dated `stated` and the bridge received at
    `received`, and a note when the station's was not used.

    A time in the past is believed (messages wait at the broker while the bridge is down); one
    ahead of the bridge by more than `max_skew_s` is a fast station clock, and would make the MES
    refuse the 완공 (`completed_at` before `started_at`): the bridge's time is used instead.
    """
    if stated is None:
        return received, None
    ahead = (stated - received).total_seconds()
    if ahead <= max_skew_s:
        return stated, None
    return received, (
        f"station clock ahead by {ahead:.0f} s: {name} is the bridge's time; "
        f"the station said {format_utc(stated)}"
    )


def is_redelivery(active: Iterable[Batch], station_id: str, start: BatchStart) -> bool:
    """The same start again (a broker's redelivery): a batch of this station with its batch_id,
    WIP and process is open already."""
    if start.batch_id is None:
        return False  # the bridge names the batch: no start without a name is one seen before
    same = (station_id, start.batch_id, start.wip_id, start.process_id)
    return any((b.station_id, b.batch_id, b.wip_id, b.process) == same for b in active)


def select_batch(active: Iterable[Batch], station_id: str, batch_id: str | None) -> Batch | Problem:
    """The batch a message is for: the one named, or the station's only active batch."""
    here = [batch for batch in active if batch.station_id == station_id]
    if batch_id is not None:
        named = next((batch for batch in here if batch.batch_id == batch_id), None)
        if named is None:
            return Problem(
                ProblemCode.UNKNOWN_BATCH, f"no batch {batch_id} is running on station {station_id}"
            )
        return named
    if not here:
        return Problem(ProblemCode.NO_ACTIVE_BATCH, f"station {station_id} has no active batch")
    if len(here) > 1:
        ids = ", ".join(batch.batch_id for batch in here)
        return Problem(ProblemCode.SEVERAL_ACTIVE_BATCHES, f"active batches: {ids}")
    return here[0]


def record(batch: Batch, values: Mapping[str, Measured], *, defects: Iterable[str] = ()) -> Batch:
    """The batch with these measurements gathered; a repeated name keeps its latest value."""
    gathered = batch.gathered_bytes()
    before = Gathered.of(batch.measurements)
    # A batch's defects are unique already (only this function adds to them): without new ones
    # the list is shared, not rebuilt.
    codes = list(defects)
    merged = unique([*batch.defects, *codes]) if codes else batch.defects
    # A new mapping, not the old one added to: a batch is never changed once made, which is what
    # lets a failed transaction put the old one back.
    updated = batch.model_copy(
        update={"measurements": before.with_values(values), "defects": merged}
    )
    for name, got in values.items():
        gathered += _entry_bytes(name, got.value)
        if name in before:
            gathered -= _entry_bytes(name, before[name].value)
    gathered += sum(_item_bytes(code) for code in merged[len(batch.defects) :])
    _sizes(updated)[_GATHERED] = gathered
    return updated


def _item_bytes(value: Any) -> int:
    """One JSON item with its comma (compact, UTF-8; never shorter than pydantic writes it)."""
    # A number's JSON is its repr, ASCII (as json writes it): the usual reading is counted
    # without the encoder, which costs ~1 µs for anything but a string.
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return len(repr(value)) + 1
    return len(compact_json(value).encode()) + 1


def _entry_bytes(name: str, value: Any) -> int:
    return _item_bytes(name) + _item_bytes(value)  # the name's "comma" stands for the colon


DEFAULT_BOUNDS = BatchesConfig()


def request_bytes(request: MesRequest) -> int:
    """The size of a request as the bridge stores and sends it (its JSON, UTF-8)."""
    return len(request.model_dump_json().encode())


def too_large_to_send(request: MesRequest, *, bounds: BatchesConfig) -> Problem | None:
    """Why a request in the outbox must not be sent: it is larger than `max_request_bytes`
    (queued before the bound existed, or under a larger one). The MES closes the connection on
    a request it cannot take in, which looks like an outage: it would be retried for ever."""
    size = request_bytes(request)
    if size <= bounds.max_request_bytes:
        return None
    return Problem(
        ProblemCode.TOO_LARGE_TO_SEND,
        f"the request is {size} bytes; batches.max_request_bytes is {bounds.max_request_bytes}",
    )


def within_bounds(batch: Batch, station: StationConfig, *, bounds: BatchesConfig) -> Problem | None:
    """Whether a batch with what a message just added may be kept: the message that would take
    it past a bound is refused, so that its 완공 stays a request the MES can take in.

    The size counted is never below that of the 완공 completed now without notes: the batch's
    measurements and defects, with room for the longest result, a cycle time of 12 digits and
    every defect the process's limits could add."""
    if len(batch.measurements) > bounds.max_measurements:
        return Problem(
            ProblemCode.TOO_MANY_MEASUREMENTS,
            f"{len(batch.measurements)} measurement names; at most {bounds.max_measurements} "
            "per batch",
        )
    sizes = _sizes(batch)
    envelope: int | None = sizes[_ENVELOPE]
    if envelope is None:
        envelope = sizes[_ENVELOPE] = _envelope_bytes(batch, station)
    return _size_problem(envelope + batch.gathered_bytes(), bounds)


def _envelope_bytes(batch: Batch, station: StationConfig) -> int:
    """A 완공 of this batch without its measurements and reported defects, at its largest."""
    limits = station.limits.get(batch.process, {})
    worst = [
        code
        for name, limit in limits.items()
        for code in (limit.defect, limit.missing_defect or f"MISSING_{name.upper()}")
    ]
    envelope = CompleteProcess(
        wip_id=batch.wip_id,
        process=batch.process,
        operator_id=batch.operator_id,
        result=Result.REWORK,
        started_at=batch.started_at,
        completed_at=batch.started_at,
        measurements={"cycle_time_ms": 10**12},
        defects=worst,
    )
    return request_bytes(envelope)


def _size_problem(size: int, bounds: BatchesConfig) -> Problem | None:
    if size <= bounds.max_request_bytes:
        return None
    return Problem(
        ProblemCode.REQUEST_TOO_LARGE,
        f"the 완공 would be {size} bytes; at most {bounds.max_request_bytes}",
    )


def close_batch(
    batch: Batch,
    complete: BatchComplete,
    station: StationConfig,
    *,
    now: datetime,
    bounds: BatchesConfig = DEFAULT_BOUNDS,
) -> tuple[CompleteProcess, str | None] | Problem:
    """The 완공 for a batch (the stated result, or one decided from the station's limits), and
    a note for the tablet when a station time was not used; or why it is too large to send.
    `now` is when the bridge received the complete."""
    completed_at, note = station_time(
        complete.completed_at, now, max_skew_s=station.max_clock_skew_s, name="completed_at"
    )
    if completed_at < batch.started_at:
        # Two clocks disagree (the start and the complete dated by different devices, or the
        # start's clock was ahead within the tolerance): the MES would refuse it for ever.
        fixed = max(now, batch.started_at)
        note = (
            f"completed_at {format_utc(completed_at)} is before the batch started "
            f"({format_utc(batch.started_at)}): recorded as {format_utc(fixed)}"
        )
        completed_at = fixed
    notes = "; ".join(n for n in (batch.clock_note, note) if n)
    verdict = decide(
        measured=batch.measurements,
        reported_defects=[*batch.defects, *complete.defects],
        limits=station.limits.get(batch.process, {}),
        stated=complete.result,
        cycle_time_ms=round((completed_at - batch.started_at).total_seconds() * 1000),
    )
    request = CompleteProcess(
        wip_id=batch.wip_id,
        process=batch.process,
        operator_id=batch.operator_id,
        result=verdict.result,
        started_at=batch.started_at,
        completed_at=completed_at,
        measurements=verdict.measurements,
        defects=verdict.defects,
        notes=_joined(complete.notes, notes),
    )
    return _size_problem(request_bytes(request), bounds) or (request, note)


def _joined(stated: str, clock: str) -> str:
    if not clock:
        return stated
    # The MES takes 5000 characters of notes: the station's own are shortened, not the clock's.
    return f"{stated[: 4997 - len(clock)]} [{clock}]" if stated else clock
