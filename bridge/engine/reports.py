"""What the dispatcher's delivery reports do to the state, and what the tablets are told of them:
delivered (live, or `SYNCED` for a request announced as queued), deferred (`…_OFFLINE`),
refused for good (`SEQUENCE_ERROR`, dead letters, `BLOCKED` dependents), and an answer that takes
too long (`outbox.answer_within_s`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.config import BridgeConfig
from bridge.core.batches import too_large_to_send
from bridge.core.domain import MesState, Result
from bridge.core.outbox import Change, Entry, new_entry
from bridge.core.outcomes import LIVE_EVENT, OFFLINE_EVENT, Event
from bridge.core.problems import Problem, ProblemCode
from bridge.core.retry import RetryPolicy
from bridge.engine.dispatcher import Answer, Dispatcher
from bridge.engine.state import State, Transaction, entry_ids
from bridge.faults import Faults
from bridge.mes import (
    CompleteProcess,
    Completion,
    ConvertToSerial,
    MesClient,
    MesError,
    MesErrorCode,
    Serial,
    WipStatus,
)

_log = logging.getLogger(__name__)


class DeliveryReports:
    """The dispatcher's listener: every report changes the state on disk first."""

    def __init__(
        self,
        config: BridgeConfig,
        state: State,
        *,
        mes: MesClient,
        clock: Callable[[], datetime],
        faults: Faults | None = None,
    ) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._slow: set[asyncio.Task[None]] = set()
        # Entries written already marked as under way (`first_attempt_now`) that their lane has
        # not taken yet, by seq.
        self._marked: dict[int, Entry] = {}
        self.dispatcher = Dispatcher(
            mes,
            state.outbox,
            self,
            policy=RetryPolicy(config.outbox.retry_min_s, config.outbox.retry_max_s),
            probe_interval_s=config.outbox.probe_interval_s,
            settle_s=config.outbox.settle_s,
            offline_after=config.outbox.offline_after_failures,
            release_every_s=config.mes.rate_window_s / config.mes.rate_limit,
            clock=clock,
            faults=faults,
        )

    @property
    def offline(self) -> bool:
        return self.dispatcher.offline

    def wake(self, wip_id: str) -> None:
        self.dispatcher.wake(wip_id)

    def _current(self, entry: Entry) -> Entry:
        """The entry as stored: the lane's copy may be behind (an announcement made meanwhile)."""
        return self._state.outbox.get(entry.seq) or entry

    def first_attempt_now(self, entry: Entry) -> Entry:
        """A new entry whose lane will send it at once, as it is to be written: already marked
        as under way, so that its first attempt needs no commit of its own (one fsync less
        between a tablet's request and its answer). Marking it before it is sent is only ever
        too cautious: a bridge that dies before the lane sent it finds it under way, and its
        next attempt asks the MES's trace first (`bridge.core.retry`) instead of sending
        blindly. Until its lane takes it, an abort still drops it as unsent (`unsent`)."""
        marked = entry.model_copy(update={"attempts": 1, "in_flight": True})
        # Marked entries dropped before their lane took them (an abort, a failed commit).
        outbox = self._state.outbox
        self._marked = {seq: e for seq, e in self._marked.items() if outbox.get(seq) is not None}
        self._marked[marked.seq] = marked
        return marked

    def unsent(self, batch_uid: str) -> list[Entry]:
        """This batch's entries marked as under way that their lane has not taken yet: not sent
        (a lane takes one inside a transaction, which excludes the caller's)."""
        return [
            entry
            for entry in self._marked.values()
            if entry.batch_uid == batch_uid and self._state.outbox.get(entry.seq) == entry
        ]

    async def attempt_starting(self, entry: Entry) -> Entry | None:
        """The entry, marked as under way on disk; None when it is not to be sent: cancelled
        meanwhile (its batch aborted before the attempt), or too large to send (then it is a
        dead letter, never tried)."""
        async with self._state.transaction() as tx:
            current = self._state.outbox.get(entry.seq)
            marked = self._marked.pop(entry.seq, None)
            if current is None:
                return None
            too_large = too_large_to_send(current.request, bounds=self._config.batches)
            if too_large is not None:
                _log.warning("%s not sent: %s", current.describe(), too_large.detail)
                self._dead_letter(tx, current, too_large)
                return None
            if current == marked:
                # Written as under way with the request itself: the disk says so already. An
                # entry changed since (announced as slow) is marked again below, as any other.
                return current
            started = current.model_copy(
                update={
                    "attempts": current.attempts + 1,
                    "in_flight": True,
                    "maybe_applied": current.maybe_applied or current.in_flight,
                }
            )
            tx.stage(Change(entries=[started]))
        return started

    async def delivered(self, entry: Entry, answer: Answer, wip_status: WipStatus | None) -> None:
        async with self._state.transaction() as tx:
            entry = self._current(entry)
            change = Change(dropped_entries=[entry])
            follow_up = self._auto_convert(entry, wip_status)
            if follow_up is not None:
                change.entries.append(follow_up)
            tx.stage(change)
            fields = {**entry_ids(entry), "wip_status": wip_status}
            if isinstance(answer, Completion):
                fields["can_convert"] = answer.can_convert
                fields["mes_result"] = str(answer.sent_result)
            elif wip_status is not None:
                fields["can_convert"] = wip_status is WipStatus.COMPLETED
            if isinstance(answer, Serial):
                fields["serial_number"] = answer.serial_number
            # The MES holds the request: the tablet need not wait for the fsync that removes it
            # from the outbox (one fewer on the path of the answer).
            if entry.announced:
                tx.result_early(entry.station_id, Event.SYNCED, action=entry.action, **fields)
            if entry.action == "convert":
                tx.result_early(entry.station_id, Event.SERIAL_CREATED, **fields)
            elif not entry.announced:
                tx.result_early(entry.station_id, LIVE_EVENT[entry.action], **fields)
            if follow_up is not None:
                converting = follow_up
                tx.after_commit(lambda: self.watch_answer(converting))
                tx.after_commit(lambda: self.wake(converting.wip_id))
            tx.publish_all_status()  # the outbox counts changed

    async def deferred(self, entry: Entry, error: MesError, at: datetime) -> None:
        async with self._state.transaction() as tx:
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
                for other in self._state.outbox.lane(entry.wip_id)
                if other.seq != entry.seq and not other.announced
            ]
            tx.stage(Change(entries=[waiting, *behind]))
            news = [entry] if not entry.announced else []
            self._tell_queued(tx, [*news, *behind], error)
            tx.publish_all_status()  # the outbox counts changed

    async def gave_up(self, entry: Entry, error: MesError) -> None:
        async with self._state.transaction() as tx:
            self._dead_letter(tx, self._current(entry), error)

    def _dead_letter(self, tx: Transaction, entry: Entry, error: MesError | Problem) -> None:
        """The entry refused for good, with what depends on it; their tablets are told."""
        now = self._clock()
        dead = [_dead(entry, error.to_dict(), now)]
        said = str(error) if isinstance(error, MesError) else f"{error.code}: {error.detail}"
        blocked = Problem(ProblemCode.BLOCKED, f"{entry.describe()} was refused: {said}")
        dependents = self._state.outbox.same_batch_after(entry)
        dead += [_dead(other, blocked.to_dict(), now) for other in dependents]
        change = Change(entries=dead)
        ended = self._state.batches.get(entry.batch_uid or "")
        if entry.action == "start" and ended is not None:
            change.dropped_batches.append(ended)  # a refused 착공: the batch ends
        tx.stage(change)
        refused: list[tuple[Entry, MesError | Problem]] = [(entry, error)]
        refused += [(other, blocked) for other in dependents]
        for item, why in refused:
            ids = {"action": item.action, **entry_ids(item)}
            tx.error(item.station_id, why, **ids)
            if item.announced:  # the tablet was told it is queued: close that story too
                tx.result(item.station_id, Event.SYNC_FAILED, error=why.to_dict(), **ids)
        tx.publish_all_status()  # the outbox counts changed

    def watch_answer(self, entry: Entry) -> None:
        """If the first attempt has not answered within `outbox.answer_within_s`, tell the
        tablet its request is queued, rather than keep it waiting for a slow MES."""

        def check() -> None:
            current = self._state.outbox.get(entry.seq)
            if current is not None and not current.dead and not current.announced:
                task = asyncio.create_task(self._announce_slow(entry.seq))
                self._slow.add(task)
                task.add_done_callback(self._slow.discard)

        asyncio.get_running_loop().call_later(self._config.outbox.answer_within_s, check)

    async def _announce_slow(self, seq: int) -> None:
        async with self._state.transaction() as tx:
            current = self._state.outbox.get(seq)
            if current is None or current.dead or current.announced:
                return  # the answer came meanwhile
            announced = current.model_copy(update={"announced": True})
            tx.stage(Change(entries=[announced]))
            slow = MesError(MesErrorCode.TIMEOUT, detail="no answer from the MES yet")
            self._tell_queued(tx, [announced], slow)

    def _tell_queued(self, tx: Transaction, entries: list[Entry], reason: MesError) -> None:
        for entry in entries:
            event = OFFLINE_EVENT[entry.action]
            tx.result(entry.station_id, event, reason=reason.to_dict(), **entry_ids(entry))

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
        made = new_entry(
            self._state.outbox, convert, station_id=entry.station_id, batch=None, now=self._clock()
        )
        return made.model_copy(update={"batch_id": entry.batch_id, "batch_uid": entry.batch_uid})

    def mes_state_changed(self, state: MesState) -> None:
        self._state.mes_state = state
        self._state.publish_all_status()


def _dead(entry: Entry, reason: dict[str, Any], now: datetime) -> Entry:
    return entry.model_copy(update={"in_flight": False, "dead_at": now, "dead_reason": reason})
