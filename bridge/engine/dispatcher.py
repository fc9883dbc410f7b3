"""Delivers the outbox to the MES: one lane per WIP, strictly one request in flight per lane.

A lane is a task only while its WIP can go: a WIP waiting for its next attempt has a timer (one
heap for all), and one waiting for the MES to come back is in a set; either starts its lane again
when its time comes. A long outage's thousands of waiting WIPs cost no task each (memory, and the
cyclic GC's passes over them).

The dispatcher decides *when* to send and what an answer means (with `bridge.core.retry`); what
happens to batches, entries and result topics is the listener's business
(`bridge.engine.reports`), so that one place changes state and writes it to disk.

The MES is called offline after failures in a row (`Outage`), not after one. While it is, only
the probe knocks, with a real request (the MES's /health says 200 even with its database down),
brought forward as soon as a /health that failed answers again; once a probe is answered, the
waiting lanes are let go one at a time at the MES's pace (`release_every_s`), not all at once.
A lane that fails in an unexpected way is restarted.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, Protocol

from bridge.adapters.store import StoreError
from bridge.core.domain import MesState
from bridge.core.outbox import Entry, Outbox
from bridge.core.retry import OFFLINE_CODES, GiveUp, Outage, RetryPolicy, after_failure
from bridge.faults import FaultPoint, Faults
from bridge.mes import (
    CompleteProcess,
    Completion,
    MesClient,
    MesError,
    MesErrorCode,
    Recorded,
    Serial,
    WipItem,
    WipStatus,
)

_log = logging.getLogger(__name__)

Answer = WipItem | Completion | Serial | None

# How often /health is asked while the MES does not even answer that (free of its rate limit).
_KNOCK_EVERY_S = 0.5
# At start, the heads of this many waiting WIPs are read between two turns of the event loop.
_SCHEDULED_PER_STEP = 256
# Stale items the timer heap may hold beyond twice the timed WIPs before it is rebuilt.
_STALE_TIMERS_KEPT = 64


class DeliveryListener(Protocol):
    """What the dispatcher reports; each call writes the entry's new state to disk first."""

    async def attempt_starting(self, entry: Entry) -> Entry | None: ...

    async def delivered(self, entry: Entry, answer: Answer, wip_status: WipStatus | None) -> None:
        """`answer` is None when a lost earlier attempt turned out to have been recorded."""

    async def deferred(self, entry: Entry, error: MesError, at: datetime) -> None: ...

    async def gave_up(self, entry: Entry, error: MesError) -> None: ...

    def mes_state_changed(self, state: MesState) -> None: ...


class _Until(NamedTuple):
    """How long a WIP's head must wait before it may go: `seconds`, or (None) until the MES
    answers again. A `firm` wait (a request whose outcome is unknown settling) is not cut
    short by a recovery."""

    seconds: float | None
    firm: bool = False


_UNTIL_BACK = _Until(None)


class Dispatcher:
    def __init__(
        self,
        mes: MesClient,
        outbox: Outbox,
        listener: DeliveryListener,
        *,
        policy: RetryPolicy,
        probe_interval_s: float,
        settle_s: float,
        offline_after: int,
        release_every_s: float,
        clock: Callable[[], datetime],
        jitter: Callable[[], float] = random.random,
        faults: Faults | None = None,
    ) -> None:
        self._mes = mes
        self._outbox = outbox
        self._listener = listener
        self._policy = policy
        self._probe_interval_s = probe_interval_s
        self._settle_s = settle_s
        self._release_every_s = release_every_s
        self._clock = clock
        self._jitter = jitter
        self._faults = faults or Faults()
        self._outage = Outage(threshold=offline_after)
        # A WIP with pending entries is in one of three places: a lane (a task) delivers it now;
        # it waits for its time (a timer); or it waits for the MES to come back. Only the first
        # costs a task: a long outage's thousands of waiting WIPs cost a set entry each.
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._due: dict[str, float] = {}  # WIP -> the loop time its head may go
        self._firm: set[str] = set()  # those of `_due` that a recovery does not hurry
        self._timers: list[tuple[float, str]] = []  # a heap over `_due`; stale items skipped
        self._timer: asyncio.TimerHandle | None = None
        self._held: set[str] = set()  # waiting for the MES to answer again
        # Let go by a recovery: the next turn goes without waiting for its backoff.
        self._hurried: set[str] = set()
        # WIPs whose request was under way when the bridge stopped: the MES may still be at it.
        self._unsettled: set[str] = set()
        self._release: asyncio.Task[None] | None = None
        self._offline = asyncio.Event()
        # Until /health has answered during this outage, it is asked often (`_until_probe_time`).
        self._health_failing = True
        self.state = MesState.UNKNOWN

    @property
    def offline(self) -> bool:
        return self.state in (MesState.OFFLINE, MesState.AUTH_FAILED)

    @property
    def running_lanes(self) -> int:
        """WIPs being delivered now, a task each (those waiting for a time or the MES have none)."""
        return len(self._lanes)

    @property
    def timed_lanes(self) -> int:
        """WIPs waiting for their next attempt's time, without a task."""
        return len(self._due)

    @property
    def held_lanes(self) -> int:
        """WIPs waiting for the MES to answer again, without a task."""
        return len(self._held)

    def wake(self, wip_id: str) -> None:
        """A new entry for this WIP: make sure a lane delivers it, unless the WIP already waits
        (the new entry goes behind the head it waits with)."""
        if not self._known(wip_id):
            self._start(wip_id)

    def _known(self, wip_id: str) -> bool:
        return wip_id in self._lanes or wip_id in self._due or wip_id in self._held

    def _start(self, wip_id: str) -> None:
        self._lanes[wip_id] = asyncio.create_task(self._lane(wip_id), name=f"lane {wip_id}")

    async def run(self) -> None:
        """Deliver what is waiting from before, then probe the MES while it is offline."""
        self._unsettled = self._outbox.under_way()
        try:
            await self._schedule_waiting()
            while True:
                await self._offline.wait()
                await self._until_probe_time()
                if self.state is MesState.OFFLINE:
                    await self._probe()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            tasks = [*self._lanes.values(), *([self._release] if self._release else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule_waiting(self) -> None:
        """Give each WIP waiting from before a lane, or a timer, or a place among those waiting
        for the MES."""
        for n, wip_id in enumerate(sorted(self._outbox.waiting_wips()), start=1):
            if n % _SCHEDULED_PER_STEP == 0:
                await asyncio.sleep(0)  # thousands of heads are read: let the loop breathe
            if self._known(wip_id):
                continue  # woken by a new entry while this went on
            head = self._outbox.head(wip_id)
            if head is None:
                continue  # delivered meanwhile
            if (until := self._turn(wip_id, head)) is None:
                self._start(wip_id)
            else:
                self._park(wip_id, until)

    async def _until_probe_time(self) -> None:
        """Wait `probe_interval_s`, or less when the MES comes back from not answering at all.

        While even its /health fails (the MES or the network down), /health is asked every
        `_KNOCK_EVERY_S`: it costs nothing of the MES's request budget, and its first answer
        brings the real probe at once, so the first delivery follows within a second of the
        MES answering. Once /health answers, it proves nothing more (it says 200 with the
        database down): the real probe keeps its interval."""
        loop = asyncio.get_running_loop()
        probe_at = loop.time() + self._probe_interval_s
        while self._health_failing and (left := probe_at - loop.time()) > 0:
            await asyncio.sleep(min(_KNOCK_EVERY_S, left))
            try:
                await self._mes.health()
            except MesError:
                continue
            self._health_failing = False
            return
        await asyncio.sleep(max(probe_at - loop.time(), 0.0))

    async def _probe(self) -> None:
        """Knock with a real request: the trace of a waiting WIP needs the database and a token."""
        waiting = min(self._held or self._due or self._lanes, default=None)
        try:
            await self._mes.probe(waiting)
        except MesError as error:
            if error.code in OFFLINE_CODES or error.code is MesErrorCode.RATE_LIMITED:
                _log.debug("the MES is still away: %s", error)
                return  # every lane keeps waiting, with its backoff
            if error.code is MesErrorCode.AUTH:
                self._set_state(MesState.AUTH_FAILED)
                return
        except Exception:
            _log.exception("the MES probe failed unexpectedly: still offline")
            return
        _log.info("the MES answers again: releasing the waiting requests at its pace")
        self._outage.answered()
        self._set_state(MesState.ONLINE)

    async def _lane(self, wip_id: str) -> None:
        """Deliver this WIP's entries until its head must wait; restart after anything
        unexpected, never stay dead. A head that must wait leaves the lane for a timer or for
        the MES's recovery, which start a lane again."""
        failures = 0
        try:
            while True:
                try:
                    until = await self._deliver(wip_id)
                    break
                except Exception:
                    # A bug, not an MES answer: the entry stays on disk; try again after a pause.
                    failures += 1
                    _log.exception("delivery of %s failed: restarting its lane", wip_id)
                    await asyncio.sleep(self._policy.delay(failures, self._jitter()))
        finally:
            del self._lanes[wip_id]
        if until is None:
            self._hurried.discard(wip_id)  # nothing left to deliver
        else:
            self._park(wip_id, until)

    async def _deliver(self, wip_id: str) -> _Until | None:
        """Attempt this WIP's heads in order; what the first that may not go yet waits for, or
        None when none is left."""
        await self._faults.hit(FaultPoint.LANE_START)
        while (entry := self._outbox.head(wip_id)) is not None:
            if (until := self._turn(wip_id, entry)) is not None:
                return until
            try:
                await self._attempt(entry)
            except StoreError as error:
                # Nothing was sent (the attempt is written down first): wait and try again.
                _log.error("%s: cannot write to disk, not sending: %s", entry.describe(), error)
                await asyncio.sleep(self._policy.max_s)
        return None

    def _turn(self, wip_id: str, entry: Entry) -> _Until | None:
        """What this head waits for before it may be attempted (None: nothing, it goes now)."""
        if wip_id in self._unsettled:
            # Its request was under way when the bridge stopped: the trace cannot be trusted
            # until the MES can no longer be working on it.
            self._unsettled.discard(wip_id)
            return _Until(self._settle_s, firm=True)
        if entry.maybe_applied and entry.next_attempt_at is not None:
            # Held for the settle time (or its backoff): a recovery does not cut it short.
            wait = (entry.next_attempt_at - self._clock()).total_seconds()
            if wait > 0:
                return _Until(wait, firm=True)
        if wip_id in self._hurried:
            self._hurried.discard(wip_id)
            return None
        if self.state is MesState.OFFLINE:
            # Only the probe knocks while the MES is away: lanes retrying on their own
            # would spend the MES's per-IP request budget before it is even back.
            return _UNTIL_BACK
        if entry.next_attempt_at is None:
            return None
        wait = (entry.next_attempt_at - self._clock()).total_seconds()
        return _Until(wait) if wait > 0 else None

    def _park(self, wip_id: str, until: _Until) -> None:
        """Leave this WIP without a task until its time (a timer) or the MES's recovery."""
        if until.seconds is None:
            self._held.add(wip_id)
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + until.seconds
        self._due[wip_id] = at
        if until.firm:
            self._firm.add(wip_id)
        heapq.heappush(self._timers, (at, wip_id))
        if len(self._timers) > 2 * len(self._due) + _STALE_TIMERS_KEPT:
            # Timers of WIPs started early (a recovery) linger until their time: drop them.
            self._timers = [(due, wip) for wip, due in self._due.items()]
            heapq.heapify(self._timers)
        if self._timer is None or at < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(at, self._timers_due, at)

    def _timers_due(self, now: float) -> None:
        """Start a lane for every WIP whose time has come; set the timer for the next one."""
        self._timer = None
        while self._timers and self._timers[0][0] <= now:
            at, wip_id = heapq.heappop(self._timers)
            if self._due.get(wip_id) == at:
                self._unpark(wip_id)
                self._start(wip_id)
        if self._timers:
            at = self._timers[0][0]
            self._timer = asyncio.get_running_loop().call_at(at, self._timers_due, at)

    def _unpark(self, wip_id: str) -> None:
        self._due.pop(wip_id, None)
        self._firm.discard(wip_id)
        self._held.discard(wip_id)

    async def _attempt(self, entry: Entry) -> None:
        started = await self._listener.attempt_starting(entry)
        if started is None:
            return
        entry, request = started, started.request
        answer: Answer = None
        recorded: Recorded | None = None
        try:
            try:
                if entry.maybe_applied:
                    recorded = await self._mes.recorded(request)
                if recorded is None:
                    answer = await self._mes.send(request)
            except (ValueError, TypeError) as error:  # cannot even be encoded: no retry helps
                raise MesError(MesErrorCode.VALIDATION, detail=f"not sendable: {error}") from error
            except MesError:
                raise
            except Exception as error:
                # Not a known answer: whatever it was, the request may have reached the MES.
                _log.exception("%s: unexpected failure", entry.describe())
                raise MesError(
                    MesErrorCode.SERVER,
                    detail=f"unexpected: {type(error).__name__}: {error}",
                    unsettled=True,
                ) from error
        except MesError as error:
            # After an unknown outcome `recorded()` was asked first and said no: a refusal now
            # (a duplicate PASS, an already converted WIP) is the MES's answer to this request.
            await self._failed(entry, error)
            return
        self._outage.answered()
        self._set_state(MesState.ONLINE)
        status = recorded.wip_status if recorded else await self._wip_status(request, answer)
        _log.info("%s delivered%s", entry.describe(), f" (WIP {status})" if status else "")
        await self._listener.delivered(entry, answer, status)

    async def _failed(self, entry: Entry, error: MesError) -> None:
        if error.code in OFFLINE_CODES:
            if self._outage.failed():
                self._set_state(MesState.OFFLINE)
        elif error.code is MesErrorCode.AUTH:
            self._outage.answered()
            self._set_state(MesState.AUTH_FAILED)
        elif error.code is MesErrorCode.TLS:
            self._set_state(MesState.TLS_FAILED)
        else:
            self._outage.answered()
            self._set_state(MesState.ONLINE)
        decision = after_failure(
            entry,
            error,
            policy=self._policy,
            now=self._clock(),
            jitter=self._jitter(),
            settle_s=self._settle_s,
        )
        if isinstance(decision, GiveUp):
            _log.warning("%s refused by the MES for good: %s", entry.describe(), error)
            await self._listener.gave_up(entry, error)
        else:
            _log.info("%s will be retried at %s: %s", entry.describe(), decision.at, error)
            await self._listener.deferred(entry, error, decision.at)

    async def _wip_status(self, request: object, answer: Answer) -> WipStatus | None:
        if isinstance(answer, Completion):
            return answer.wip_status
        if answer is None and isinstance(request, CompleteProcess):
            try:  # a resent PASS refused as a duplicate: ask what the WIP's status is now
                return (await self._mes.scan(request.wip_id)).status
            except MesError as error:
                _log.warning("%s: status unknown after recovery: %s", request.wip_id, error)
        return None

    def _set_state(self, state: MesState) -> None:
        if state is self.state:
            return
        _log.info("MES is %s (was %s)", state, self.state)
        recovered = self.offline and state is not MesState.OFFLINE
        self.state = state
        if self.offline:
            self._health_failing = True
            self._offline.set()
        else:
            self._offline.clear()
        if recovered and (self._release is None or self._release.done()):
            self._release = asyncio.create_task(self._release_lanes(), name="release lanes")
        self._listener.mes_state_changed(state)

    async def _release_lanes(self) -> None:
        """Let every waiting WIP go, one at a time at the MES's pace: all at once, they would
        spend the MES's request budget in a burst, and fail together if it is not quite back.
        First every WIP known at the recovery, in order; then any that went to wait for the MES
        meanwhile (the MES went away and came back while this ran)."""
        waiting = sorted({*self._held, *self._due, *self._lanes})
        while waiting:
            for wip_id in waiting:
                if self.state is MesState.OFFLINE:
                    return  # down again: the rest keep waiting for the next confirmed recovery
                if not self._known(wip_id):
                    continue  # delivered meanwhile
                _log.debug("%s may go", wip_id)
                self._hurried.add(wip_id)
                if wip_id in self._held or (wip_id in self._due and wip_id not in self._firm):
                    self._unpark(wip_id)
                    self._start(wip_id)
                await asyncio.sleep(self._release_every_s)
            waiting = sorted(self._held)
