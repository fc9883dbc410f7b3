"""The stations' side of the state: what a tablet, a PLC or a gauge sends becomes batches and
MES requests in the outbox (pure decisions from `station.py` and `results.py`, written through
`State`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .config import StationConfig
from .deliveries import Deliveries
from .lanes import UnknownStations, may_convert, shown_id
from .mes import CompleteProcess, ConvertToSerial, StartProcess
from .messages import (
    BatchAbort,
    BatchComplete,
    BatchStart,
    MeasurementIn,
    Payload,
    WipConvert,
    parse_payload,
)
from .outbox import Change, new_entry
from .outcomes import OFFLINE_EVENT, Event
from .problems import Problem, ProblemCode
from .results import Measured
from .state import State, batch_ids, entry_ids
from .station import (
    Batch,
    close_batch,
    is_redelivery,
    open_batch,
    record,
    select_batch,
    within_bounds,
)
from .store import StoreError
from .topics import Inbound, Received, Topics

_log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        state: State,
        deliveries: Deliveries,
        *,
        new_batch_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self._state = state
        self._config = state.config
        self._deliveries = deliveries
        self._new_batch_id = new_batch_id
        self._topics = Topics(state.config.mqtt.topic_prefix)
        self._unknown = UnknownStations()

    async def handle(self, messages: Sequence[Received]) -> None:
        """MQTT messages that arrived together, in order. Returns once all their effects are on
        disk, in one commit: then they may be acknowledged."""
        try:
            async with self._state.together():
                for message in messages:
                    try:
                        self._one(message)
                    except Exception:  # a bug: it must not cost the other messages their work
                        _log.exception("handling a message on %s failed", message.topic)
        except StoreError as error:
            _log.error("not saved: %s", error)
            for message in messages:
                self._not_saved(message, error)

    def _one(self, message: Received) -> None:
        parsed = self._topics.parse(message.topic)
        if parsed is None:
            _log.warning("ignored a message on %s: not a station topic", message.topic)
            return
        station_id, kind = parsed
        station = self._config.station(station_id)
        if station is None:
            self._from_unknown(station_id, kind)
            return
        if message.retained:
            # Replaying it would start a batch again, or add a stale reading to a new one.
            _log.warning("ignored a retained message on %s", message.topic)
            self._state.error(station_id, Problem(ProblemCode.RETAINED), topic=kind.value)
            return
        payload = self._parse(kind, message)
        if isinstance(payload, Problem):
            self._state.error(station_id, payload, topic=kind.value)
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

    def _from_unknown(self, station_id: str, kind: Inbound) -> None:
        """Not answered on the id's own topics (anyone can invent ids): on the bridge's."""
        reply = self._unknown.note(station_id, now=self._state.clock())
        if reply.log:
            _log.warning("a message on %s for unknown station %r", kind.value, shown_id(station_id))
        if reply.answer:
            unknown = Problem(ProblemCode.UNKNOWN_STATION, f"no station {shown_id(station_id)!r}")
            self._state.bridge_error(unknown, station_id=shown_id(station_id), topic=kind.value)

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
            async with self._state.together():
                batch = select_batch(self._state.batches.values(), station_id, None)
                station = self._config.station(station_id)
                if not isinstance(batch, Problem) and station is not None:
                    candidate = record(batch, values)
                    # Past a bound the reading is only shown (measurement/live, unrecorded): an
                    # error per reading would flood the tablet at the gauge's rate.
                    if within_bounds(candidate, station, bounds=self._config.batches) is None:
                        updated = candidate
                        self._state.stage(Change(measured=[(updated, list(values))]))
        except StoreError as error:
            _log.error("reading not saved: %s", error)
            problem = Problem(ProblemCode.STORAGE_FAILED, str(error))
            self._state.error(station_id, problem, batch_id=updated.batch_id if updated else None)
            return None
        if updated is not None:
            self._state.status_soon(station_id)
        return updated

    def gauge_problem(self, station_id: str, error: dict[str, Any], **fields: Any) -> None:
        """A gauge's overload or error, told to the station's tablet."""
        self._state.result(station_id, Event.SEQUENCE_ERROR, error=error, **fields)

    def _start(self, station: StationConfig, start: BatchStart) -> None:
        ids = {"wip_id": start.wip_id, "process_id": start.process_id, "batch_id": start.batch_id}
        if is_redelivery(self._state.batches, station.id, start):
            _log.info("batch %s: the same start again (a redelivery?): ignored", start.batch_id)
            return
        pending = self._state.outbox.pending_count()
        if pending >= self._config.outbox.max_pending:
            detail = f"{pending} requests wait for the MES"
            self._state.error(station.id, Problem(ProblemCode.OUTBOX_FULL, detail), **ids)
            return
        batch = open_batch(
            self._state.batches.values(),
            station,
            start,
            batch_id=start.batch_id or self._new_batch_id(),
            now=self._state.clock(),
        )
        if isinstance(batch, Problem):
            self._state.error(station.id, batch, **ids)
            return
        request = StartProcess(
            wip_id=batch.wip_id,
            process=batch.process,
            operator_id=batch.operator_id,
            started_at=batch.started_at,
            equipment_id=batch.equipment_id,
        )
        self._enqueue(request, station.id, batch, Change(batches=[batch]))

    def _measure(self, station: StationConfig, message: MeasurementIn) -> None:
        batch = select_batch(self._state.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._state.error(station.id, batch, batch_id=message.batch_id)
            return
        values = message.values()
        updated = record(batch, values, defects=message.defects)
        refused = within_bounds(updated, station, bounds=self._config.batches)
        if refused is not None:
            self._state.error(station.id, refused, **batch_ids(batch))
            return
        self._state.stage(Change(measured=[(updated, list(values))]))
        self._state.status_soon(station.id)

    def _complete(self, station: StationConfig, message: BatchComplete) -> None:
        batch = select_batch(self._state.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._state.error(station.id, batch, batch_id=message.batch_id)
            return
        request = close_batch(
            batch, message, station, now=self._state.clock(), bounds=self._config.batches
        )
        if isinstance(request, Problem):
            self._state.error(station.id, request, **batch_ids(batch))
            return
        self._enqueue(request, station.id, batch, Change(dropped_batches=[batch]))

    def _abort(self, station: StationConfig, message: BatchAbort) -> None:
        batch = select_batch(self._state.batches.values(), station.id, message.batch_id)
        if isinstance(batch, Problem):
            self._state.error(station.id, batch, batch_id=message.batch_id)
            return
        # A 착공 not yet tried need not reach the MES at all; one already tried may be there.
        unsent = [
            entry
            for entry in self._state.outbox.pending()
            if entry.batch_id == batch.batch_id and entry.attempts == 0
        ]
        self._state.stage(Change(dropped_batches=[batch], dropped_entries=unsent))
        _log.info("batch %s aborted: %s", batch.batch_id, message.reason)
        self._state.result(
            station.id, Event.BATCH_ABORTED, reason=message.reason, **batch_ids(batch)
        )
        if unsent:
            self._state.publish_all_status()  # the outbox counts changed
        else:
            self._state.status_soon(station.id)

    def _convert(self, station: StationConfig, message: WipConvert) -> None:
        refused = may_convert(station, self._config.stations)
        if refused is not None:
            self._state.error(station.id, refused, wip_id=message.wip_id)
            return
        request = ConvertToSerial(
            wip_id=message.wip_id, operator_id=message.operator_id, notes=message.notes
        )
        self._enqueue(request, station.id, None, Change())

    def _enqueue(
        self,
        request: StartProcess | CompleteProcess | ConvertToSerial,
        station_id: str,
        batch: Batch | None,
        change: Change,
    ) -> None:
        """Write the request to the outbox (with the batch's change, in one transaction), then
        tell the tablet at once if it can only be queued, else let the first attempt decide."""
        queued = self._deliveries.offline or self._state.outbox.stalled(request.wip_id)
        entry = new_entry(
            self._state.outbox,
            request,
            station_id=station_id,
            batch_id=batch.batch_id if batch else None,
            now=self._state.clock(),
            announced=queued,
        )
        change.entries.append(entry)
        self._state.stage(change)
        if queued:
            self._state.result(station_id, OFFLINE_EVENT[entry.action], **entry_ids(entry))
        else:
            self._state.after_commit(lambda: self._deliveries.watch_answer(entry))
        self._state.after_commit(lambda: self._deliveries.wake(request.wip_id))
        self._state.publish_all_status()  # the outbox counts changed
