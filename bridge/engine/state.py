"""The bridge's state — the stations' active batches and the outbox — and the one way it changes:
a `Transaction`, to disk first, then to memory, then out on the result topics (but for an
outcome the MES already holds, `Transaction.result_early`, which need not wait for the fsync).

Everything that changes the state (inbound messages, gauge readings, the dispatcher's delivery
reports) does so inside `State.transaction()`, one at a time, so that a decision always sees the
state the previous one left. MQTT messages that arrive together share one transaction: one commit
(one fsync) for all of them, before any is acknowledged.

A commit that has started is awaited to its end even when the task is cancelled (a broken broker
link, SIGTERM): the worker thread finishes it regardless, and memory must end up as the disk is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Collection
from datetime import datetime
from typing import Any, Protocol

from bridge.adapters.store import Store, StoreError
from bridge.config import BridgeConfig
from bridge.core import redelivery
from bridge.core.batches import Batch
from bridge.core.domain import MesState, format_utc
from bridge.core.outbox import NEXT_SEQ_KEY, Change, Entry, Outbox, load_state
from bridge.core.outcomes import TOPIC, Event, outcome
from bridge.core.problems import Problem
from bridge.core.topics import Topics
from bridge.faults import FaultPoint, Faults
from bridge.mes import CompleteProcess, MesError, StartProcess
from bridge.version import bridge_version

_log = logging.getLogger(__name__)

_STATUS_DELAY_S = 0.1
_BROKER_SESSION_KEY = "meta/broker_session"

Answer = tuple[str, dict[str, Any]]  # (topic, payload) of one outcome


class Publish(Protocol):
    def __call__(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None: ...


class Transaction:
    """One change of the state in progress. Memory changes at once (the next decision within
    the transaction sees it), the disk at the end in one commit, and what it publishes or wakes
    only after that. `answers` are the outcomes it will publish, in order."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.writes: dict[str, str | None] = {}
        self.answers: list[Answer] = []
        self._effects: list[Callable[[], None]] = []
        self._early: list[Callable[[], None]] = []  # `result_early`: when the commit begins
        # What memory held before this transaction touched it: enough to undo it (None: absent).
        # Batches by uid, entries by seq.
        self._old_batches: dict[str, Batch | None] = {}
        self._old_entries: dict[int, Entry | None] = {}

    def stage(self, change: Change) -> None:
        state = self._state
        self.writes.update(change.writes())
        if change.entries:
            self.writes[NEXT_SEQ_KEY] = str(state.outbox.next_seq)
        for entry in [*change.entries, *change.dropped_entries]:
            self._old_entries.setdefault(entry.seq, state.outbox.get(entry.seq))
        updated = change.updated_batches()
        for batch in [*updated, *change.dropped_batches]:
            self._old_batches.setdefault(batch.uid, state.batches.get(batch.uid))
        state.outbox.apply(change)
        for batch in change.dropped_batches:
            state._put_batch(batch.uid, None)
        for batch in updated:
            state._put_batch(batch.uid, batch)

    def put(self, key: str, value: str | None) -> None:
        """A row of the bridge's own bookkeeping, written in the same commit."""
        self.writes[key] = value

    def result(self, station_id: str, event: Event, **fields: Any) -> None:
        state = self._state
        topic = state.topics.result(station_id, TOPIC[event])
        self.republish([(topic, state.outcome(event, station_id, fields))])

    def result_early(self, station_id: str, event: Event, **fields: Any) -> None:
        """An outcome whose truth does not depend on this commit (the MES already holds the
        request it reports): published as soon as the commit begins, not after its fsync. If
        the commit then fails, or the bridge dies before it ends, the request is still on disk
        as under way: its next attempt finds it in the MES's trace, and the tablet hears of it
        again (as QoS 1 may repeat any message), but never of a second record or of a refusal."""
        state = self._state
        topic = state.topics.result(station_id, TOPIC[event])
        payload = state.outcome(event, station_id, fields)
        self._early.append(lambda: state.publish(topic, payload))

    def error(self, station_id: str, error: Problem | MesError, **fields: Any) -> None:
        _log.info("station %s: %s %s", station_id, error.to_dict()["code"], fields)
        self.result(station_id, Event.SEQUENCE_ERROR, error=error.to_dict(), **fields)

    def bridge_error(self, error: Problem, **fields: Any) -> None:
        """A refusal no station's topic may carry (a message for an id that is not a station)."""
        state = self._state
        payload = outcome(Event.SEQUENCE_ERROR, at=state.clock(), error=error.to_dict(), **fields)
        self.republish([(state.topics.bridge_error(state.config.bridge_id), payload)])

    def republish(self, answers: list[Answer]) -> None:
        """Outcomes to publish as they are (a redelivered message's answers, as before)."""
        self.answers.extend(answers)
        self._effects.append(lambda: self._publish_all(answers))

    def _publish_all(self, answers: list[Answer]) -> None:
        for topic, payload in answers:
            self._state.publish(topic, payload)

    def after_commit(self, effect: Callable[[], None]) -> None:
        self._effects.append(effect)

    def status_soon(self, station_id: str) -> None:
        self._effects.append(lambda: self._state.status_soon(station_id))

    def publish_all_status(self) -> None:
        """Every station's status (shared counts changed)."""
        self._effects.append(self._state.publish_all_status)

    def _undo(self) -> None:
        state = self._state
        for seq, entry in self._old_entries.items():
            state.outbox.put(seq, entry)
        for uid, batch in self._old_batches.items():
            state._put_batch(uid, batch)

    def _run_effects(self) -> None:
        for effect in self._effects:
            effect()

    def _run_early(self) -> None:
        for effect in self._early:
            effect()


class State:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        store: Store,
        publish: Publish,
        clock: Callable[[], datetime],
        faults: Faults | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.publish = publish
        self.topics = Topics(config.mqtt.topic_prefix)
        # By uid: batch ids are unique per station only. Changed only by `_put_batch` (and
        # `load`), which keeps `_by_station` with it.
        self.batches: dict[str, Batch] = {}
        # The same batches by station, then uid: a message looks among its station's few.
        self._by_station: dict[str, dict[str, Batch]] = {}
        self.outbox = Outbox()
        self.mes_state = MesState.UNKNOWN
        self.mes_confirmed_at: datetime | None = (
            None  # the MES's last answer (bridge.engine.mes_watch)
        )
        self.broker_session = "unknown"
        self.store = store
        self._faults = faults or Faults()
        self._lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._broker_seen = False

    async def load(self) -> None:
        """Read the disk: batches and outbox survive restarts."""
        rows = await self.store.open(skip=(redelivery.PREFIX,))
        batches, self.outbox = load_state(rows)
        self.batches, self._by_station = {}, {}
        for uid, batch in batches.items():
            self._put_batch(uid, batch)
        self._broker_seen = _BROKER_SESSION_KEY in rows
        del rows
        # What was loaded lives as long as the bridge: keep it out of the cyclic GC's full
        # passes, which would otherwise walk all of it (a long outage's outbox) every time.
        gc.collect()
        gc.freeze()
        _log.info(
            "loaded %d active batch(es), %d pending and %d dead-lettered request(s)",
            len(self.batches),
            self.outbox.pending_count(),
            self.outbox.dead_count(),
        )
        for batch in self.batches.values():
            if self.config.station(batch.station_id) is None:
                _log.warning(
                    "batch %s (%s, process %d) belongs to station %s, which is not in the config "
                    "any more: it stays open until it is ended (see docs/configuration.md)",
                    batch.batch_id,
                    batch.wip_id,
                    batch.process,
                    batch.station_id,
                )

    def station_batches(self, station_id: str) -> Collection[Batch]:
        """The station's active batches, in the order they were opened."""
        return self._by_station.get(station_id, {}).values()

    def _put_batch(self, uid: str, batch: Batch | None) -> None:
        """Set (or, with None, remove) one active batch, in `batches` and by its station. A
        batch that is replaced keeps its place in both (the order statuses list them in)."""
        if batch is None:
            gone = self.batches.pop(uid, None)
            if gone is not None:
                here = self._by_station[gone.station_id]
                del here[uid]
                if not here:
                    del self._by_station[gone.station_id]
        else:
            self.batches[uid] = batch
            self._by_station.setdefault(batch.station_id, {})[uid] = batch

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """The one way to change the state. If the body or the commit fails, memory goes back to
        what it was and the error is raised: nothing half-done. What the transaction publishes
        or wakes happens after its commit."""
        async with self._lock:
            tx = Transaction(self)
            try:
                yield tx
            except BaseException:
                tx._undo()
                raise
            await self._commit(tx)
        tx._run_effects()

    async def _commit(self, tx: Transaction) -> None:
        if not tx.writes:
            tx._run_early()
            return
        writing = asyncio.ensure_future(self.store.commit(tx.writes))
        tx._run_early()
        cancelled = False
        try:
            await self._faults.hit(FaultPoint.INSIDE_COMMIT)
        except asyncio.CancelledError:
            cancelled = True
        # Cancelled or not, the worker thread goes on writing: wait for it to know the outcome.
        while not writing.done():
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                cancelled = True
            except StoreError:
                pass
        error = writing.exception()
        if error is not None:
            tx._undo()
            raise error
        if cancelled:
            # On disk: keep memory as it is and let its effects happen (a lane must still be
            # woken for a new entry), then let the cancellation go on.
            tx._run_effects()
            raise asyncio.CancelledError

    def outcome(self, event: Event, station_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return outcome(event, at=self.clock(), station_id=station_id, **fields)

    def result(self, station_id: str, event: Event, **fields: Any) -> None:
        """An outcome that changes nothing in the state: published at once."""
        topic = self.topics.result(station_id, TOPIC[event])
        self.publish(topic, self.outcome(event, station_id, fields))

    def error(self, station_id: str, error: Problem | MesError, **fields: Any) -> None:
        _log.info("station %s: %s %s", station_id, error.to_dict()["code"], fields)
        self.result(station_id, Event.SEQUENCE_ERROR, error=error.to_dict(), **fields)

    async def broker_connected(self, *, session_present: bool, persistent: bool) -> None:
        """Note what the broker said of the bridge's session. A persistent broker that had a
        session for this bridge before and has none now lost what it held for it: messages
        the stations sent meanwhile may be gone."""
        if session_present:
            self.broker_session = "resumed"
        elif self._broker_seen and persistent:
            self.broker_session = "lost"
            _log.warning(
                "the MQTT broker has no session for this bridge any more: messages the stations "
                "sent while the bridge was away may have been lost (broker restarted without "
                "persistence, or the session expired)"
            )
        else:
            self.broker_session = "new"
        if not self._broker_seen:
            try:
                async with self.transaction() as tx:
                    tx.put(_BROKER_SESSION_KEY, '"seen"')
                self._broker_seen = True
            except StoreError as error:  # a full disk must not end the session: try next time
                _log.error("not saved: %s", error)
        self.publish_all_status()

    def status_soon(self, station_id: str) -> None:
        """Publish the station's status soon: changes within a tenth of a second (a gauge
        streaming readings) make one message."""
        if self.config.station(station_id) is None:
            return
        self._dirty.add(station_id)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(_STATUS_DELAY_S, self._flush_status)

    def _flush_status(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        for station_id in sorted(dirty):
            self.publish(self.topics.status(station_id), self.status(station_id), retain=True)

    def status(self, station_id: str) -> dict[str, Any]:
        active = [b.summary() for b in self.station_batches(station_id)]
        return {
            "station_id": station_id,
            "bridge_id": self.config.bridge_id,
            "state": "running" if active else "idle",
            "active_batches": active,
            "outbox": {
                "pending": self.outbox.pending_count(station_id),
                "pending_total": self.outbox.pending_count(),
                "dead_letters": self.outbox.dead_count(station_id),
            },
            "mes": str(self.mes_state),
            "mes_confirmed_at": format_utc(self.mes_confirmed_at)
            if self.mes_confirmed_at
            else None,
            "broker_session": self.broker_session,
            "version": bridge_version(),
            "at": format_utc(self.clock()),
        }

    def publish_all_status(self) -> None:
        """Every station's status (after a reconnect, or when shared counts changed)."""
        for station in self.config.stations:
            self.status_soon(station.id)


def batch_ids(batch: Batch) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "wip_id": batch.wip_id, "process_id": batch.process}


def entry_ids(entry: Entry) -> dict[str, Any]:
    request = entry.request
    fields: dict[str, Any] = {"batch_id": entry.batch_id, "wip_id": request.wip_id}
    if isinstance(request, StartProcess | CompleteProcess):
        fields["process_id"] = request.process
    if isinstance(request, CompleteProcess):
        fields["result"] = str(request.result)
    if entry.note:
        fields["note"] = entry.note
    return fields
