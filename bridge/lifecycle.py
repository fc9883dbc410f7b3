"""The stations' batches and the outbox: every state change goes to disk, then to memory, then
out on the result topics.

Inbound messages (MQTT or a serial gauge) and the dispatcher's delivery reports are handled here,
one at a time (a lock), so that a decision always sees the state the previous one left. MQTT
messages that arrive together are handled as a group: one commit (one fsync) for all of them,
before any of them is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .config import BridgeConfig, StationConfig
from .delivery import RetryPolicy
from .dispatcher import Answer, Dispatcher, MesState
from .mes import (
    CompleteProcess,
    Completion,
    ConvertToSerial,
    MesClient,
    MesError,
    MesErrorCode,
    Result,
    Serial,
    StartProcess,
    WipStatus,
)
from .mes.models import format_utc
from .messages import (
    BatchAbort,
    BatchComplete,
    BatchStart,
    MeasurementIn,
    WipConvert,
    parse_payload,
)
from .outbox import NEXT_SEQ_KEY, Change, Entry, Outbox, load_state, new_entry
from .outcomes import TOPIC, Event, outcome
from .problems import Problem, ProblemCode
from .results import Measured
from .station import Batch, close_batch, open_batch, record, select_batch
from .store import Store, StoreError
from .topics import Topics

_log = logging.getLogger(__name__)

_STATUS_DELAY_S = 0.1
_LIVE = {"start": Event.PROCESS_STARTED, "complete": Event.SEQUENCE_COMPLETE}
_OFFLINE = {
    "start": Event.PROCESS_STARTED_OFFLINE,
    "complete": Event.SEQUENCE_COMPLETE_OFFLINE,
    "convert": Event.SERIAL_CREATED_OFFLINE,
}


@dataclass
class _Group:
    """What a group of messages did, until it is on disk: the state to go back to, the writes,
    and what to publish or wake after the commit."""

    owner: asyncio.Task[Any] | None
    batches: dict[str, Batch]
    entries: dict[int, Entry]
    writes: dict[str, str | None] = field(default_factory=dict)
    effects: list[Callable[[], None]] = field(default_factory=list)


class Publish(Protocol):
    def __call__(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None: ...


class Lifecycle:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        mes: MesClient,
        store: Store,
        publish: Publish,
        clock: Callable[[], datetime],
        new_batch_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self._config = config
        self._store = store
        self._publish = publish
        self._clock = clock
        self._new_batch_id = new_batch_id
        self._topics = Topics(config.mqtt.topic_prefix)
        self._lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._group: _Group | None = None
        self._slow: set[asyncio.Task[None]] = set()
        self.batches: dict[str, Batch] = {}
        self.outbox = Outbox()
        self._mes = mes

    async def load(self) -> Dispatcher:
        """Read the disk (batches and outbox survive restarts) and make their dispatcher."""
        self.batches, self.outbox = load_state(await self._store.open())
        self.dispatcher = Dispatcher(
            self._mes,
            self.outbox,
            self,
            policy=RetryPolicy(self._config.outbox.retry_min_s, self._config.outbox.retry_max_s),
            probe_interval_s=self._config.outbox.probe_interval_s,
            clock=self._clock,
        )
        _log.info(
            "loaded %d active batch(es), %d pending and %d dead-lettered request(s)",
            len(self.batches),
            self.outbox.pending_count(),
            len(self.outbox.dead()),
        )
        return self.dispatcher

    # -- inbound ------------------------------------------------------------------------------

    async def handle(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """MQTT messages (topic, payload), in order. Returns once all their effects are on disk,
        in one commit: then they may be acknowledged."""
        try:
            async with self._together():
                for topic, raw in messages:
                    try:
                        self._one(topic, raw)
                    except Exception:  # a bug: it must not cost the other messages their work
                        _log.exception("handling a message on %s failed", topic)
        except StoreError as error:
            _log.error("not saved: %s", error)
            for topic, raw in messages:
                self._not_saved(topic, raw, error)

    def _one(self, topic: str, raw: bytes) -> None:
        parsed = self._topics.parse(topic)
        if parsed is None:
            _log.warning("ignored a message on %s: not a station topic", topic)
            return
        station_id, kind = parsed
        station = self._config.station(station_id)
        if station is None:
            unknown = Problem(ProblemCode.UNKNOWN_STATION, f"no station {station_id!r}")
            self._error(station_id, unknown, topic=kind.value)
            return
        payload = parse_payload(kind, raw, max_bytes=self._config.mqtt.max_message_bytes)
        if isinstance(payload, Problem):
            self._error(station_id, payload, topic=kind.value)
        elif isinstance(payload, BatchStart):
            self._start(station, payload)
        elif isinstance(payload, MeasurementIn):
            self._measure(station, payload)
        elif isinstance(payload, BatchComplete):
            self._complete(station, payload)
        elif isinstance(payload, BatchAbort):
            self._abort(station, payload)
        else:
            self._convert(station, payload)

    def _not_saved(self, topic: str, raw: bytes, error: StoreError) -> None:
        parsed = self._topics.parse(topic)
        if parsed is None or self._config.station(parsed[0]) is None:
            return
        payload = parse_payload(parsed[1], raw, max_bytes=self._config.mqtt.max_message_bytes)
        if isinstance(payload, Problem):  # it was refused anyway: say why, not that the disk failed
            self._error(parsed[0], payload, topic=parsed[1].value)
            return
        ids = {name: getattr(payload, name, None) for name in ("batch_id", "wip_id", "process_id")}
        problem = Problem(ProblemCode.STORAGE_FAILED, str(error))
        self._error(parsed[0], problem, topic=parsed[1].value, **ids)

    async def measured(self, station_id: str, values: dict[str, Measured]) -> Batch | None:
        """A serial gauge's reading: recorded in the station's only active batch, if it has
        one (the batch it went into is returned)."""
        updated: Batch | None = None
        try:
            async with self._together():
                batch = select_batch(self.batches.values(), station_id, None)
                if not isinstance(batch, Problem):
                    updated = record(batch, values)
                    self._stage(Change(measured=[(updated, list(values))]))
        except StoreError as error:
            _log.error("reading not saved: %s", error)
            problem = Problem(ProblemCode.STORAGE_FAILED, str(error))
            self._error(station_id, problem, batch_id=updated.batch_id if updated else None)
            return None
        if updated is not None:
            self._status(station_id)
        return updated

    def gauge_problem(self, station_id: str, error: dict[str, Any], **fields: Any) -> None:
        """A gauge's overload or error, told to the station's tablet."""
        self._result(station_id, Event.SEQUENCE_ERROR, error=error, **fields)

    def _start(self, station: StationConfig, start: BatchStart) -> None:
        ids = {"wip_id": start.wip_id, "process_id": start.process_id, "batch_id": start.batch_id}
        repeated = self.batches.get(start.batch_id or "")
        if repeated and (repeated.wip_id, repeated.process) == (start.wip_id, start.process_id):
            _log.info("batch %s: the same start again (a redelivery?): ignored", start.batch_id)
            return
        if self.outbox.pending_count() >= self._config.outbox.max_pending:
            detail = f"{self.outbox.pending_count()} requests wait for the MES"
            self._error(station.id, Problem(ProblemCode.OUTBOX_FULL, detail), **ids)
            return
        batch = open_batch(
            self.batches.values(),
            station,
            start,
            batch_id=start.batch_id or self._new_batch_id(),
            now=self._clock(),
        )
        if isinstance(batch, Problem):
            self._error(station.id, batch, **ids)
            return
        request = StartProcess(
            wip_id=batch.wip_id,
            process=batch.process,
            operator_id=batch.operator_id,
            started_at=batch.started_at,
            equipment_id=batch.equipment_id,
        )
        self._enqueue(request, batch, Change(batches=[batch]))

    def _measure(self, station: StationConfig, message: MeasurementIn) -> None:
        batch = select_batch(self.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._error(station.id, batch, batch_id=message.batch_id)
            return
        values = message.values()
        updated = record(batch, values, defects=message.defects)
        self._stage(Change(measured=[(updated, list(values))]))
        self._status(station.id)

    def _complete(self, station: StationConfig, message: BatchComplete) -> None:
        batch = select_batch(self.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._error(station.id, batch, batch_id=message.batch_id)
            return
        request = close_batch(batch, message, station, now=self._clock())
        if isinstance(request, Problem):
            self._error(station.id, request, **_ids(batch))
            return
        self._enqueue(request, batch, Change(dropped_batches=[batch]))

    def _abort(self, station: StationConfig, message: BatchAbort) -> None:
        batch = select_batch(self.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._error(station.id, batch, batch_id=message.batch_id)
            return
        # A 착공 not yet tried need not reach the MES at all; one already tried may be there.
        unsent = [
            entry
            for entry in self.outbox.pending()
            if entry.batch_id == batch.batch_id and entry.attempts == 0
        ]
        self._stage(Change(dropped_batches=[batch], dropped_entries=unsent))
        _log.info("batch %s aborted: %s", batch.batch_id, message.reason)
        self._result(station.id, Event.BATCH_ABORTED, reason=message.reason, **_ids(batch))
        if unsent:
            self.publish_all_status()  # the outbox counts changed
        else:
            self._status(station.id)

    def _convert(self, station: StationConfig, message: WipConvert) -> None:
        request = ConvertToSerial(
            wip_id=message.wip_id, operator_id=message.operator_id, notes=message.notes
        )
        self._enqueue(request, None, Change(), station_id=station.id)

    def _enqueue(
        self,
        request: StartProcess | CompleteProcess | ConvertToSerial,
        batch: Batch | None,
        change: Change,
        *,
        station_id: str | None = None,
    ) -> None:
        """Write the request to the outbox (with the batch's change, in one transaction), then
        tell the tablet at once if it can only be queued, else let the first attempt decide."""
        station_id = station_id or (batch.station_id if batch else "")
        queued = self.dispatcher.offline or self.outbox.stalled(request.wip_id)
        entry = new_entry(
            self.outbox,
            request,
            station_id=station_id,
            batch_id=batch.batch_id if batch else None,
            now=self._clock(),
            announced=queued,
        )
        change.entries.append(entry)
        self._stage(change)
        if queued:
            self._result(station_id, _OFFLINE[entry.action], **_entry_ids(entry))
        else:
            self._after_commit(lambda: self._watch_answer(entry))
        self._after_commit(lambda: self.dispatcher.wake(request.wip_id))
        self.publish_all_status()  # the outbox counts changed

    # -- delivery reports (from the dispatcher) -----------------------------------------------

    async def attempt_starting(self, entry: Entry) -> Entry | None:
        """The entry, marked as under way on disk; None when it was cancelled meanwhile (its
        batch aborted before the attempt)."""
        async with self._lock:
            current = self.outbox.get(entry.seq)
            if current is None:
                return None
            started = current.model_copy(
                update={
                    "attempts": current.attempts + 1,
                    "in_flight": True,
                    "maybe_applied": current.maybe_applied or current.in_flight,
                }
            )
            await self._write(Change(entries=[started]))
        return started

    async def delivered(self, entry: Entry, answer: Answer, wip_status: WipStatus | None) -> None:
        async with self._lock:
            entry = self._current(entry)
            change = Change(dropped_entries=[entry])
            follow_up = self._auto_convert(entry, wip_status)
            if follow_up is not None:
                change.entries.append(follow_up)
            await self._write(change)
        fields = {**_entry_ids(entry), "wip_status": wip_status}
        if isinstance(answer, Completion):
            fields["can_convert"] = answer.can_convert
            fields["mes_result"] = str(answer.sent_result)
        elif wip_status is not None:
            fields["can_convert"] = wip_status is WipStatus.COMPLETED
        if isinstance(answer, Serial):
            fields["serial_number"] = answer.serial_number
        if entry.announced:
            self._result(entry.station_id, Event.SYNCED, action=entry.action, **fields)
        if entry.action == "convert":
            self._result(entry.station_id, Event.SERIAL_CREATED, **fields)
        elif not entry.announced:
            self._result(entry.station_id, _LIVE[entry.action], **fields)
        if follow_up is not None:
            self._watch_answer(follow_up)
            self.dispatcher.wake(follow_up.wip_id)
        self.publish_all_status()  # the outbox counts changed

    async def deferred(self, entry: Entry, error: MesError, at: datetime) -> None:
        async with self._lock:
            entry = self._current(entry)
            waiting = entry.model_copy(
                update={
                    "in_flight": False,
                    "maybe_applied": entry.maybe_applied or error.maybe_applied,
                    "next_attempt_at": at,
                    "last_error": error.to_dict(),
                    "announced": True,
                }
            )
            # Whatever waits behind it in this WIP's queue is now queued too: say so.
            behind = [
                other.model_copy(update={"announced": True})
                for other in self.outbox.pending()
                if other.wip_id == entry.wip_id and other.seq != entry.seq and not other.announced
            ]
            await self._write(Change(entries=[waiting, *behind]))
        news = [entry] if not entry.announced else []
        for item in [*news, *behind]:
            event = _OFFLINE[item.action]
            self._result(item.station_id, event, reason=error.to_dict(), **_entry_ids(item))
        self.publish_all_status()  # the outbox counts changed

    async def gave_up(self, entry: Entry, error: MesError) -> None:
        now = self._clock()
        reason = error.to_dict()
        async with self._lock:
            entry = self._current(entry)
            dead = [_dead(entry, reason, now)]
            blocked = Problem(ProblemCode.BLOCKED, f"{entry.describe()} was refused: {error}")
            dependents = self.outbox.same_batch_after(entry)
            dead += [_dead(other, blocked.to_dict(), now) for other in dependents]
            change = Change(entries=dead)
            ended = self.batches.get(entry.batch_id or "")
            if entry.action == "start" and ended is not None:
                change.dropped_batches.append(ended)  # a refused 착공: the batch ends
            await self._write(change)
        refused: list[tuple[Entry, MesError | Problem]] = [(entry, error)]
        refused += [(other, blocked) for other in dependents]
        for item, why in refused:
            ids = {"action": item.action, **_entry_ids(item)}
            self._error(item.station_id, why, **ids)
            if item.announced:  # the tablet was told it is queued: close that story too
                self._result(item.station_id, Event.SYNC_FAILED, error=why.to_dict(), **ids)
        self.publish_all_status()  # the outbox counts changed

    def _current(self, entry: Entry) -> Entry:
        """The entry as stored: the lane's copy may be behind (an announcement made meanwhile)."""
        return self.outbox.get(entry.seq) or entry

    def _watch_answer(self, entry: Entry) -> None:
        """If the first attempt has not answered within `outbox.answer_within_s`, tell the
        tablet its request is queued, rather than keep it waiting for a slow MES."""

        def check() -> None:
            current = self.outbox.get(entry.seq)
            if current is not None and not current.dead and not current.announced:
                task = asyncio.create_task(self._announce_slow(entry.seq))
                self._slow.add(task)
                task.add_done_callback(self._slow.discard)

        asyncio.get_running_loop().call_later(self._config.outbox.answer_within_s, check)

    async def _announce_slow(self, seq: int) -> None:
        async with self._lock:
            current = self.outbox.get(seq)
            if current is None or current.dead or current.announced:
                return  # the answer came meanwhile
            announced = current.model_copy(update={"announced": True})
            await self._write(Change(entries=[announced]))
        slow = MesError(MesErrorCode.TIMEOUT, detail="no answer from the MES yet")
        event = _OFFLINE[announced.action]
        self._result(announced.station_id, event, reason=slow.to_dict(), **_entry_ids(announced))

    def mes_state_changed(self, state: MesState) -> None:
        self.publish_all_status()

    def _auto_convert(self, entry: Entry, wip_status: WipStatus | None) -> Entry | None:
        request = entry.request
        station = self._config.station(entry.station_id)
        if not (
            isinstance(request, CompleteProcess)
            and request.result is Result.PASS
            and wip_status is WipStatus.COMPLETED
            and station is not None
            and station.auto_convert
        ):
            return None
        convert = ConvertToSerial(
            wip_id=request.wip_id, operator_id=request.operator_id, notes="auto: all processes PASS"
        )
        return new_entry(
            self.outbox,
            convert,
            station_id=entry.station_id,
            batch_id=entry.batch_id,
            now=self._clock(),
        )

    # -- disk and topics ----------------------------------------------------------------------

    async def _write(self, change: Change) -> None:
        """One change straight to disk, then memory (the dispatcher's reports)."""
        await self._store.commit(self._writes(change))
        self._apply(change)

    def _stage(self, change: Change) -> None:
        """A change inside `_together`: in memory now (the next message sees it), on disk with
        the group."""
        group = self._group
        assert group is not None and group.owner is asyncio.current_task(), "not in _together"
        group.writes.update(self._writes(change))
        self._apply(change)

    @contextlib.asynccontextmanager
    async def _together(self) -> AsyncIterator[None]:
        """Changes staged inside reach the disk in one commit at the end, and what they publish
        or wake happens only after it. If the commit (or anything) fails, memory goes back to
        what it was and the error is raised: nothing half-done."""
        async with self._lock:
            group = _Group(asyncio.current_task(), dict(self.batches), self.outbox.snapshot())
            self._group = group
            try:
                yield
                await self._store.commit(group.writes)
            except BaseException:
                self.batches = group.batches
                self.outbox.restore(group.entries)
                raise
            finally:
                self._group = None
        for effect in group.effects:
            effect()

    def _after_commit(self, effect: Callable[[], None]) -> None:
        group = self._group
        # Only the task handling the group waits for its commit: a delivery report from a lane,
        # made while a group is being written, goes out at once.
        if group is not None and group.owner is asyncio.current_task():
            group.effects.append(effect)
        else:
            effect()

    def _writes(self, change: Change) -> dict[str, str | None]:
        writes = change.writes()
        if change.entries:
            writes[NEXT_SEQ_KEY] = str(self.outbox.next_seq)
        return writes

    def _apply(self, change: Change) -> None:
        self.outbox.apply(change)
        for batch in change.dropped_batches:
            self.batches.pop(batch.batch_id, None)
        for batch in change.updated_batches():
            self.batches[batch.batch_id] = batch

    def _error(self, station_id: str, error: Problem | MesError, **fields: Any) -> None:
        _log.info("station %s: %s %s", station_id, error.to_dict()["code"], fields)
        self._result(station_id, Event.SEQUENCE_ERROR, error=error.to_dict(), **fields)

    def _result(self, station_id: str, event: Event, **fields: Any) -> None:
        payload = outcome(event, at=self._clock(), station_id=station_id, **fields)
        topic = self._topics.result(station_id, TOPIC[event])
        self._after_commit(lambda: self._publish(topic, payload))

    def _status(self, station_id: str) -> None:
        """Publish the station's status soon: changes within a tenth of a second (a gauge
        streaming readings) make one message."""
        if self._config.station(station_id) is None:
            return
        self._dirty.add(station_id)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(_STATUS_DELAY_S, self._flush_status)

    def _flush_status(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        for station_id in sorted(dirty):
            self._publish(self._topics.status(station_id), self.status(station_id), retain=True)

    def status(self, station_id: str) -> dict[str, Any]:
        active = [b.summary() for b in self.batches.values() if b.station_id == station_id]
        dead = sum(1 for entry in self.outbox.dead() if entry.station_id == station_id)
        return {
            "station_id": station_id,
            "bridge_id": self._config.bridge_id,
            "state": "running" if active else "idle",
            "active_batches": active,
            "outbox": {
                "pending": self.outbox.pending_count(station_id),
                "pending_total": self.outbox.pending_count(),
                "dead_letters": dead,
            },
            "mes": str(self.dispatcher.state),
            "at": format_utc(self._clock()),
        }

    def publish_all_status(self) -> None:
        """Every station's status (after a reconnect, or when shared counts changed)."""
        for station in self._config.stations:
            self._status(station.id)


def _ids(batch: Batch) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "wip_id": batch.wip_id, "process_id": batch.process}


def _entry_ids(entry: Entry) -> dict[str, Any]:
    request = entry.request
    fields: dict[str, Any] = {"batch_id": entry.batch_id, "wip_id": request.wip_id}
    if isinstance(request, StartProcess | CompleteProcess):
        fields["process_id"] = request.process
    if isinstance(request, CompleteProcess):
        fields["result"] = str(request.result)
    return fields


def _dead(entry: Entry, reason: dict[str, Any], now: datetime) -> Entry:
    return entry.model_copy(update={"in_flight": False, "dead_at": now, "dead_reason": reason})
