"""Delivers the outbox to the MES: one lane per WIP, strictly one request in flight per lane.

The dispatcher decides *when* to send and what an answer means (with `bridge.delivery`); what
happens to batches, entries and result topics is the listener's business (`bridge.deliveries`), so
that one place changes state and writes it to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from .delivery import GiveUp, RetryPolicy, after_failure, was_delivered_before
from .mes import (
    CompleteProcess,
    Completion,
    MesClient,
    MesError,
    MesErrorCode,
    Serial,
    WipItem,
    WipStatus,
)
from .outbox import Entry, Outbox
from .store import StoreError

_log = logging.getLogger(__name__)

Answer = WipItem | Completion | Serial | None

_OFFLINE_CODES = {MesErrorCode.NETWORK, MesErrorCode.TIMEOUT, MesErrorCode.SERVER}


class MesState(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"
    AUTH_FAILED = "auth_failed"
    TLS_FAILED = "tls_failed"


class DeliveryListener(Protocol):
    """What the dispatcher reports; each call writes the entry's new state to disk first."""

    async def attempt_starting(self, entry: Entry) -> Entry | None: ...

    async def delivered(self, entry: Entry, answer: Answer, wip_status: WipStatus | None) -> None:
        """`answer` is None when a lost earlier attempt turned out to have been recorded."""

    async def deferred(self, entry: Entry, error: MesError, at: datetime) -> None: ...

    async def gave_up(self, entry: Entry, error: MesError) -> None: ...

    def mes_state_changed(self, state: MesState) -> None: ...


class Dispatcher:
    def __init__(
        self,
        mes: MesClient,
        outbox: Outbox,
        listener: DeliveryListener,
        *,
        policy: RetryPolicy,
        probe_interval_s: float,
        clock: Callable[[], datetime],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._mes = mes
        self._outbox = outbox
        self._listener = listener
        self._policy = policy
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._jitter = jitter
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._hurry: dict[str, asyncio.Event] = {}
        self._offline = asyncio.Event()
        self.state = MesState.UNKNOWN

    @property
    def offline(self) -> bool:
        return self.state in (MesState.OFFLINE, MesState.AUTH_FAILED)

    def wake(self, wip_id: str) -> None:
        """A new entry for this WIP: make sure its lane runs."""
        if wip_id not in self._lanes:
            self._hurry[wip_id] = asyncio.Event()
            self._lanes[wip_id] = asyncio.create_task(self._lane(wip_id), name=f"lane {wip_id}")

    async def run(self) -> None:
        """Deliver what is waiting from before, then probe the MES while it is offline."""
        for wip_id in sorted(self._outbox.waiting_wips()):
            self.wake(wip_id)
        try:
            while True:
                await self._offline.wait()
                await asyncio.sleep(self._probe_interval_s)
                if self.state is MesState.OFFLINE:
                    await self._probe()
        finally:
            lanes = list(self._lanes.values())
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _probe(self) -> None:
        try:
            await self._mes.health()
        except MesError:
            return
        _log.info("the MES answers again: retrying every waiting request now")
        self._set_state(MesState.ONLINE)

    async def _lane(self, wip_id: str) -> None:
        hurry = self._hurry[wip_id]
        try:
            while (entry := self._outbox.head(wip_id)) is not None:
                if self.state is MesState.OFFLINE and not hurry.is_set():
                    # Only the probe knocks while the MES is away: lanes retrying on their own
                    # would spend the MES's per-IP request budget before it is even back.
                    await hurry.wait()
                elif entry.next_attempt_at is not None:
                    wait = (entry.next_attempt_at - self._clock()).total_seconds()
                    if wait > 0 and not hurry.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(hurry.wait(), timeout=wait)
                hurry.clear()
                try:
                    await self._attempt(entry)
                except StoreError as error:
                    # Nothing was sent (the attempt is written down first): wait and try again.
                    _log.error("%s: cannot write to disk, not sending: %s", entry.describe(), error)
                    await asyncio.sleep(self._policy.max_s)
        except Exception:
            # A bug, not an MES answer: the entry stays on disk and is retried at restart.
            _log.exception("delivery of %s stopped", wip_id)
        finally:
            del self._lanes[wip_id]
            del self._hurry[wip_id]

    async def _attempt(self, entry: Entry) -> None:
        started = await self._listener.attempt_starting(entry)
        if started is None:
            return
        entry, request = started, started.request
        answer: Answer = None
        try:
            try:
                if not (entry.maybe_applied and await self._mes.recorded(request)):
                    answer = await self._mes.send(request)
            except (ValueError, TypeError) as error:  # cannot even be encoded: no retry helps
                raise MesError(MesErrorCode.VALIDATION, detail=f"not sendable: {error}") from error
        except MesError as error:
            if not was_delivered_before(entry, error):
                await self._failed(entry, error)
                return
            _log.info("%s: the MES already had it (%s)", entry.describe(), error.code)
        self._set_state(MesState.ONLINE)
        status = await self._wip_status(request, answer)
        _log.info("%s delivered%s", entry.describe(), f" (WIP {status})" if status else "")
        await self._listener.delivered(entry, answer, status)

    async def _failed(self, entry: Entry, error: MesError) -> None:
        if error.code in _OFFLINE_CODES:
            self._set_state(MesState.OFFLINE)
        elif error.code is MesErrorCode.AUTH:
            self._set_state(MesState.AUTH_FAILED)
        elif error.code is MesErrorCode.TLS:
            self._set_state(MesState.TLS_FAILED)
        else:
            self._set_state(MesState.ONLINE)
        decision = after_failure(
            entry, error, policy=self._policy, now=self._clock(), jitter=self._jitter()
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
            try:  # recovered from a lost answer: ask what the WIP's status is now
                return (await self._mes.scan(request.wip_id)).status
            except MesError as error:
                _log.warning("%s: status unknown after recovery: %s", request.wip_id, error)
        return None

    def _set_state(self, state: MesState) -> None:
        if state is self.state:
            return
        _log.info("MES is %s (was %s)", state, self.state)
        recovered = self.offline and state is MesState.ONLINE
        self.state = state
        if self.offline:
            self._offline.set()
        else:
            self._offline.clear()
        if recovered:  # every lane that is backing off may go now
            for event in self._hurry.values():
                event.set()
        self._listener.mes_state_changed(state)
