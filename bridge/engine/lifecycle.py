"""The stations' side of the state: what a tablet, a PLC or a gauge sends becomes batches and
MES requests in the outbox (pure decisions from `station.py` and `results.py`, written through
`State`). A message the broker delivers again after its effect was committed is answered as
before, not applied twice (`redelivery.py`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bridge.adapters.store import StoreError
from bridge.config import StationConfig
from bridge.core import redelivery
from bridge.core.batches import (
    Batch,
    close_batch,
    is_redelivery,
    open_batch,
    record,
    select_batch,
    within_bounds,
)
from bridge.core.limits import Measured
from bridge.core.outbox import Change, new_entry
from bridge.core.outcomes import OFFLINE_EVENT, Event
from bridge.core.payloads import (
    BatchAbort,
    BatchComplete,
    BatchStart,
    MeasurementIn,
    Payload,
    WipConvert,
    parse_payload,
)
from bridge.core.permissions import UnknownStations, may_convert, shown_id
from bridge.core.problems import Problem, ProblemCode
from bridge.core.topics import Inbound, Received, Topics
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State, Transaction, batch_ids, entry_ids
from bridge.mes import CompleteProcess, ConvertToSerial, StartProcess

_log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        state: State,
        deliveries: DeliveryReports,
        *,
        new_batch_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
        new_uid: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._state = state
        self._config = state.config
        self._deliveries = deliveries
        self._new_batch_id = new_batch_id
        self._new_uid = new_uid
        self._topics = Topics(state.config.mqtt.topic_prefix)
        self._unknown = UnknownStations()

    async def handle(self, messages: Sequence[Received]) -> None:
        """MQTT messages that arrived together, in order. Returns once all their effects are on
        disk, in one commit: then they may be acknowledged."""
        try:
            redelivered = [redelivery.record_key(m) for m in messages if m.redelivered]
            records = await self._state.store.read(key for key in redelivered if key)
            async with self._state.transaction() as tx:
                for message in messages:
                    self._recorded(tx, message, records)
        except StoreError as error:
            _log.error("not saved: %s", error)
            for message in messages:
                self._not_saved(message, error)

    def _recorded(self, tx: Transaction, message: Received, records: dict[str, str]) -> None:
        """One message, and the record that it was applied (in the same commit)."""
        key = redelivery.record_key(message)
        before = redelivery.answered_before(message, records.get(key or ""))
        if before is not None:
            _log.info("a message on %s was delivered again: answered as before", message.topic)
            tx.republish(before)
            return
        mark = len(tx.answers)
        try:
            self._one(tx, message)
        except Exception:  # a bug: it must not cost the other messages their work
            _log.exception("handling a message on %s failed", message.topic)
        if key is not None:
            tx.put(key, redelivery.handled(message, tx.answers[mark:]))

    def _one(self, tx: Transaction, message: Received) -> None:
        if not message.payload:
            # An empty message is how MQTT clears a retained one; the broker passes it on to
            # subscribers. It carries no command, so it gets no answer.
            _log.debug("ignored an empty message on %s (clears a retained message)", message.topic)
            return
        parsed = self._topics.parse(message.topic)
        if parsed is None:
            _log.warning("ignored a message on %s: not a station topic", message.topic)
            return
        station_id, kind = parsed
        station = self._config.station(station_id)
        if station is None:
            self._from_unknown(tx, station_id, kind)
            return
        if message.retained:
            # Replaying it would start a batch again, or add a stale reading to a new one.
            _log.warning("ignored a retained message on %s", message.topic)
            tx.error(station_id, Problem(ProblemCode.RETAINED), topic=kind.value)
            return
        payload = self._parse(kind, message)
        if isinstance(payload, Problem):
            tx.error(station_id, payload, topic=kind.value)
        elif isinstance(payload, BatchStart):
            self._start(tx, station, payload)
        elif isinstance(payload, MeasurementIn):
            self._measure(tx, station, payload)
        elif isinstance(payload, BatchComplete):
            self._complete(tx, station, payload)
        elif isinstance(payload, BatchAbort):
            self._abort(tx, station, payload)
        else:
            self._convert(tx, station, payload)

    def _from_unknown(self, tx: Transaction, station_id: str, kind: Inbound) -> None:
        """Not answered on the id's own topics (anyone can invent ids): on the bridge's."""
        reply = self._unknown.note(station_id, now=self._state.clock())
        if reply.log:
            _log.warning("a message on %s for unknown station %r", kind.value, shown_id(station_id))
        if reply.answer:
            unknown = Problem(ProblemCode.UNKNOWN_STATION, f"no station {shown_id(station_id)!r}")
            tx.bridge_error(unknown, station_id=shown_id(station_id), topic=kind.value)

    def _parse(self, kind: Inbound, message: Received) -> Payload | Problem:
        return parse_payload(kind, message.payload, max_bytes=self._config.mqtt.max_message_bytes)

    def _not_saved(self, message: Received, error: StoreError) -> None:
        """Each message of a group whose commit failed gets an answer: its own refusal if it
        had one (a bad payload), else STORAGE_FAILED."""
        parsed = self._topics.parse(message.topic)
        if parsed is None or self._config.station(parsed[0]) is None:
            return
        station_id, kind = parsed
        payload = Problem(ProblemCode.RETAINED) if message.retained else self._parse(kind, message)
        if isinstance(payload, Problem):
            self._state.error(station_id, payload, topic=kind.value)
            return
        ids = {name: getattr(payload, name, None) for name in ("batch_id", "wip_id", "process_id")}
        problem = Problem(ProblemCode.STORAGE_FAILED, str(error))
        self._state.error(station_id, problem, topic=kind.value, **ids)

    async def measured(self, station_id: str, values: dict[str, Measured]) -> Batch | None:
        """A serial gauge's reading: recorded in the station's only active batch, if it has
        one and the reading keeps the batch within its bounds (the batch it went into is
        returned)."""
        updated: Batch | None = None
        try:
            async with self._state.transaction() as tx:
                batch = select_batch(self._state.station_batches(station_id), station_id, None)
                station = self._config.station(station_id)
                if not isinstance(batch, Problem) and station is not None:
                    candidate = record(batch, values)
                    # Past a bound the reading is only shown (measurement/live, unrecorded): an
                    # error per reading would flood the tablet at the gauge's rate.
                    if within_bounds(candidate, station, bounds=self._config.batches) is None:
                        updated = candidate
                        tx.stage(Change(readings=[(updated, list(values))]))
                        tx.status_soon(station_id)
        except StoreError as error:
            _log.error("reading not saved: %s", error)
            problem = Problem(ProblemCode.STORAGE_FAILED, str(error))
            self._state.error(station_id, problem, batch_id=updated.batch_id if updated else None)
            return None
        return updated

    def gauge_problem(self, station_id: str, error: dict[str, Any], **fields: Any) -> None:
        """A gauge's overload or error, told to the station's tablet."""
        self._state.result(station_id, Event.SEQUENCE_ERROR, error=error, **fields)

    def _start(self, tx: Transaction, station: StationConfig, start: BatchStart) -> None:
        ids = {"wip_id": start.wip_id, "process_id": start.process_id, "batch_id": start.batch_id}
        if is_redelivery(self._state.station_batches(station.id), station.id, start):
            _log.info("batch %s: the same start again: ignored", start.batch_id)
            return
        pending = self._state.outbox.pending_count()
        if pending >= self._config.outbox.max_pending:
            detail = f"{pending} requests wait for the MES"
            tx.error(station.id, Problem(ProblemCode.OUTBOX_FULL, detail), **ids)
            return
        batch = open_batch(
            self._state.batches.values(),
            station,
            start,
            batch_id=start.batch_id or self._new_batch_id(),
            uid=self._new_uid(),
            now=self._state.clock(),
        )
        if isinstance(batch, Problem):
            tx.error(station.id, batch, **ids)
            return
        request = StartProcess(
            wip_id=batch.wip_id,
            process=batch.process,
            operator_id=batch.operator_id,
            started_at=batch.started_at,
            equipment_id=batch.equipment_id,
        )
        self._enqueue(tx, request, station.id, batch, Change(batches=[batch]), batch.clock_note)

    def _measure(self, tx: Transaction, station: StationConfig, message: MeasurementIn) -> None:
        batch = select_batch(self._state.station_batches(station.id), station.id, message.batch_id)
        if isinstance(batch, Problem):
            tx.error(station.id, batch, batch_id=message.batch_id)
            return
        values = message.values()
        updated = record(batch, values, defects=message.defects)
        refused = within_bounds(updated, station, bounds=self._config.batches)
        if refused is not None:
            tx.error(station.id, refused, **batch_ids(batch))
            return
        if updated.defects == batch.defects:
            tx.stage(Change(readings=[(updated, list(values))]))
        else:
            tx.stage(Change(measured=[(updated, list(values))]))
        tx.status_soon(station.id)

    def _complete(self, tx: Transaction, station: StationConfig, message: BatchComplete) -> None:
        batch = select_batch(self._state.station_batches(station.id), station.id, message.batch_id)
        if isinstance(batch, Problem):
            tx.error(station.id, batch, batch_id=message.batch_id)
            return
        closed = close_batch(
            batch, message, station, now=self._state.clock(), bounds=self._config.batches
        )
        if isinstance(closed, Problem):
            tx.error(station.id, closed, **batch_ids(batch))
            return
        request, note = closed
        self._enqueue(tx, request, station.id, batch, Change(dropped_batches=[batch]), note)

    def _abort(self, tx: Transaction, station: StationConfig, message: BatchAbort) -> None:
        batch = select_batch(self._state.station_batches(station.id), station.id, message.batch_id)
        if isinstance(batch, Problem):
            tx.error(station.id, batch, batch_id=message.batch_id)
            return
        # A 착공 not yet tried need not reach the MES at all; one already tried may be there.
        unsent = self._state.outbox.unattempted(batch.uid) + self._deliveries.unsent(batch.uid)
        tx.stage(Change(dropped_batches=[batch], dropped_entries=unsent))
        _log.info("batch %s aborted: %s", batch.batch_id, message.reason)
        tx.result(station.id, Event.BATCH_ABORTED, reason=message.reason, **batch_ids(batch))
        if unsent:
            tx.publish_all_status()  # the outbox counts changed
        else:
            tx.status_soon(station.id)

    def _convert(self, tx: Transaction, station: StationConfig, message: WipConvert) -> None:
        refused = may_convert(station, self._config.stations)
        if refused is not None:
            tx.error(station.id, refused, wip_id=message.wip_id)
            return
        request = ConvertToSerial(
            wip_id=message.wip_id, operator_id=message.operator_id, notes=message.notes
        )
        self._enqueue(tx, request, station.id, None, Change(), None)

    def _enqueue(
        self,
        tx: Transaction,
        request: StartProcess | CompleteProcess | ConvertToSerial,
        station_id: str,
        batch: Batch | None,
        change: Change,
        note: str | None,
    ) -> None:
        """Write the request to the outbox (with the batch's change, in one transaction), then
        tell the tablet at once if it can only be queued, else let the first attempt decide."""
        queued = self._deliveries.offline or self._state.outbox.stalled(request.wip_id)
        # Nothing of this WIP waits ahead of it: its lane sends it as soon as this commit ends.
        at_once = not queued and self._state.outbox.head(request.wip_id) is None
        entry = new_entry(
            self._state.outbox,
            request,
            station_id=station_id,
            batch=batch,
            now=self._state.clock(),
            announced=queued,
            note=note,
        )
        if at_once:
            entry = self._deliveries.first_attempt_now(entry)
        change.entries.append(entry)
        tx.stage(change)
        if queued:
            tx.result(station_id, OFFLINE_EVENT[entry.action], **entry_ids(entry))
        else:
            tx.after_commit(lambda: self._deliveries.watch_answer(entry))
        tx.after_commit(lambda: self._deliveries.wake(request.wip_id))
        tx.publish_all_status()  # the outbox counts changed
