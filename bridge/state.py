"""The bridge's state — the stations' active batches and the outbox — and how a change to it
happens: to disk first, then to memory, then out on the result topics.

Inbound messages and the dispatcher's delivery reports change it one at a time (`lock`), so that
a decision always sees the state the previous one left. MQTT messages that arrive together change
it as a group (`together`): one commit (one fsync) for all of them, before any is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .config import BridgeConfig
from .dispatcher import MesState
from .mes import CompleteProcess, MesError, StartProcess
from .mes.models import format_utc
from .outbox import NEXT_SEQ_KEY, Change, Entry, Outbox, load_state
from .outcomes import TOPIC, Event, outcome
from .problems import Problem
from .station import Batch
from .store import Store
from .topics import Topics
from .version import bridge_version

_log = logging.getLogger(__name__)

_STATUS_DELAY_S = 0.1


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


class State:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        store: Store,
        publish: Publish,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.clock = clock
        self.lock = asyncio.Lock()
        self.batches: dict[str, Batch] = {}
        self.outbox = Outbox()
        self.mes_state = MesState.UNKNOWN
        self.mes_confirmed_at: datetime | None = None  # the MES's last answer (bridge.mes_watch)
        self._store = store
        self._publish = publish
        self._topics = Topics(config.mqtt.topic_prefix)
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._group: _Group | None = None

    async def load(self) -> None:
        """Read the disk: batches and outbox survive restarts."""
        self.batches, self.outbox = load_state(await self._store.open())
        _log.info(
            "loaded %d active batch(es), %d pending and %d dead-lettered request(s)",
            len(self.batches),
            self.outbox.pending_count(),
            len(self.outbox.dead()),
        )

    def current(self, entry: Entry) -> Entry:
        """The entry as stored: the lane's copy may be behind (an announcement made meanwhile)."""
        return self.outbox.get(entry.seq) or entry

    async def write(self, change: Change) -> None:
        """One change straight to disk, then memory (the dispatcher's reports)."""
        await self._store.commit(self._writes(change))
        self._apply(change)

    def stage(self, change: Change) -> None:
        """A change inside `together()`: in memory now (the next message sees it), on disk with
        the group."""
        group = self._group
        assert group is not None and group.owner is asyncio.current_task(), "not in together()"
        group.writes.update(self._writes(change))
        self._apply(change)

    @contextlib.asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """Changes staged inside reach the disk in one commit at the end, and what they publish
        or wake happens only after it. If the commit (or anything) fails, memory goes back to
        what it was and the error is raised: nothing half-done."""
        async with self.lock:
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

    def after_commit(self, effect: Callable[[], None]) -> None:
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

    def error(self, station_id: str, error: Problem | MesError, **fields: Any) -> None:
        _log.info("station %s: %s %s", station_id, error.to_dict()["code"], fields)
        self.result(station_id, Event.SEQUENCE_ERROR, error=error.to_dict(), **fields)

    def result(self, station_id: str, event: Event, **fields: Any) -> None:
        payload = outcome(event, at=self.clock(), station_id=station_id, **fields)
        topic = self._topics.result(station_id, TOPIC[event])
        self.after_commit(lambda: self._publish(topic, payload))

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
            self._publish(self._topics.status(station_id), self.status(station_id), retain=True)

    def status(self, station_id: str) -> dict[str, Any]:
        active = [b.summary() for b in self.batches.values() if b.station_id == station_id]
        dead = sum(1 for entry in self.outbox.dead() if entry.station_id == station_id)
        return {
            "station_id": station_id,
            "bridge_id": self.config.bridge_id,
            "state": "running" if active else "idle",
            "active_batches": active,
            "outbox": {
                "pending": self.outbox.pending_count(station_id),
                "pending_total": self.outbox.pending_count(),
                "dead_letters": dead,
            },
            "mes": str(self.mes_state),
            "mes_confirmed_at": format_utc(self.mes_confirmed_at)
            if self.mes_confirmed_at
            else None,
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
    return fields
