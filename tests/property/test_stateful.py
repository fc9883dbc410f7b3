"""The bridge's promise as a property: whatever stations send, however the broker redelivers,
wherever the bridge dies and however the MES answers, every record reaches the MES exactly once,
in order per WIP, nothing is lost, and what is in memory is what is on disk.

hypothesis drives the real `Lifecycle`, `State`, `DeliveryReports` and `Dispatcher` over a real
`Store` in a temporary directory, and the simulator's `MesApp` in process (`mes_in_process`),
against a small reference model of the stations' batches. DeliveryReports are stepped, not left to
lanes: a rule takes one WIP's head entry through one attempt of the dispatcher (the code a lane
runs each time round), so that every run is the same for the same rules.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.adapters.store import Store, read_directory
from bridge.config import BridgeConfig
from bridge.core.domain import Result
from bridge.core.outbox import Entry, load_state
from bridge.core.topics import Inbound, Received, Topics
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State
from bridge.faults import FaultPoint, Faults
from bridge.mes import CompleteProcess, MesClient, StartProcess

from .mes_in_process import ANSWERS, Answer, InProcessMes, Killed

OPERATOR = 2  # operator1 on the simulator
STATIONS = ("1", "2")  # station 2 converts a WIP to a serial when its last process passes
BATCH_IDS = (None, "b1", "b2")
PROCESSES = (1, 2, 6)
SEEDED = 1  # the simulator's second WIP has processes 1..5 PASS already: 6 completes it
MIDS = 8  # packet ids cycle through 1..MIDS, as a broker's do through 1..65535
MAX_UNACKED = 4  # messages whose ack was lost, waiting to be sent again
REFUSALS = {  # dead-letter reasons that are the MES's (or the bridge's BLOCKED) final word
    "WIP_NOT_FOUND",
    "PREREQUISITE_NOT_MET",
    "INVALID_WIP_STATUS",
    "DUPLICATE_PASS",
    "INCOMPLETE_PROCESSES",
    "ALREADY_CONVERTED",
    "PROCESS_NOT_STARTED",
    "VALIDATION",
    "CONFLICT",
    "BLOCKED",
}
_TAG = re.compile(r"^c\d+$")
# The store's every commit is synced: on a RAM disk that costs nothing, and the code is the same.
_FAST_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


@dataclass(frozen=True)
class Said:
    """One message a station sends, as hypothesis draws it (the WIP by its index)."""

    kind: Inbound
    station: str
    batch_id: str | None = None
    wip: int = 0
    process: int = 1
    result: str | None = None
    name: str = "len"
    value: int = 0
    dup: bool = False  # first delivery flagged DUP: an earlier one died before its commit
    # A measurement, complete or abort aimed at an active batch (the `wip`-th), as a tablet
    # that shows it would send it; else sent as drawn (mostly refused).
    aimed: bool = True


def _said(kind: Inbound, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Said]:
    return st.builds(
        Said,
        kind=st.just(kind),
        station=st.sampled_from(STATIONS),
        batch_id=st.sampled_from(BATCH_IDS),
        dup=st.booleans(),
        aimed=st.sampled_from([True, True, False]),
        **fields,
    )


WIPS = st.integers(0, 2)
MESSAGES = st.one_of(
    # Starts and completes twice as often as the rest: they make the records.
    *[_said(Inbound.START, wip=WIPS, process=st.sampled_from(PROCESSES))] * 2,
    _said(
        Inbound.MEASUREMENT,
        wip=WIPS,
        name=st.sampled_from(["len", "mass"]),
        value=st.integers(0, 9),
    ),
    *[_said(Inbound.COMPLETE, wip=WIPS, result=st.sampled_from([None, "PASS", "FAIL"]))] * 2,
    _said(Inbound.ABORT, wip=WIPS),
    _said(Inbound.CONVERT, wip=WIPS),
)
GROUPS = st.lists(MESSAGES, min_size=1, max_size=3)
# Half the attempts are answered cleanly throughout; the others meet one answer per request.
PLANS = st.one_of(st.just([]), st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=4))


@dataclass
class ModelBatch:
    station: str
    batch_id: str | None  # None: named by the bridge
    wip: str
    process: int
    measurements: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Expected:
    """An outbox entry a message must make."""

    action: str
    wip: str
    tag: str | None = None


class Model:
    """What the bridge must do with each message, from the batches it has (pure)."""

    def __init__(self) -> None:
        self.batches: list[ModelBatch] = []

    def select(self, station: str, batch_id: str | None) -> ModelBatch | None:
        here = [b for b in self.batches if b.station == station]
        if batch_id is not None:
            return next((b for b in here if b.batch_id == batch_id), None)
        return here[0] if len(here) == 1 else None

    def apply(
        self, said: Said, wip: str, tag: str
    ) -> tuple[str, Expected | None, ModelBatch | None]:
        """("refused" | "ignored" | "applied", the entry it makes, the batch it ends)."""
        if said.kind is Inbound.START:
            if said.batch_id is not None and any(
                (b.station, b.batch_id, b.wip, b.process)
                == (said.station, said.batch_id, wip, said.process)
                for b in self.batches
            ):
                return "ignored", None, None  # the same start again
            # A batch id is refused only when the station's own active batch has it.
            if any(
                (
                    said.batch_id is not None
                    and (b.station, b.batch_id) == (said.station, said.batch_id)
                )
                or b.wip == wip
                for b in self.batches
            ):
                return "refused", None, None
            self.batches.append(ModelBatch(said.station, said.batch_id, wip, said.process))
            return "applied", Expected("start", wip), None
        if said.kind is Inbound.CONVERT:
            return "applied", Expected("convert", wip), None
        batch = self.select(said.station, said.batch_id)
        if batch is None:
            return "refused", None, None
        if said.kind is Inbound.MEASUREMENT:
            batch.measurements[said.name] = said.value
            return "applied", None, None
        self.batches.remove(batch)
        if said.kind is Inbound.COMPLETE:
            return "applied", Expected("complete", batch.wip, tag), batch
        return "applied", None, batch  # aborted

    def aim(self, said: Said) -> Said:
        """The message as a tablet showing the `wip`-th active batch would send it."""
        if said.kind in (Inbound.START, Inbound.CONVERT) or not said.aimed or not self.batches:
            return said
        batch = self.batches[said.wip % len(self.batches)]
        named = batch.batch_id if said.batch_id is not None else None
        return replace(said, station=batch.station, batch_id=named)

    def rows(self) -> list[tuple[Any, ...]]:
        return sorted(
            (b.station, b.batch_id or "", b.wip, b.process, sorted(b.measurements.items()))
            for b in self.batches
        )


@dataclass
class Tracked:
    """Every outbox entry the run made, and what became of it."""

    seq: int
    action: str
    wip: str
    tag: str | None
    passed: tuple[str, int] | None = None  # a PASS 완공: its WIP and process
    fate: str = "pending"  # pending | dead | delivered | dropped (an abort, never attempted)
    attempted: bool = False  # handed to a delivery attempt at least once


@dataclass
class Unacked:
    """A message whose effect is on disk but whose ack the broker did not get."""

    message: Received
    answers: list[dict[str, Any]]  # the results published when it was handled


def _tag(notes: str) -> str | None:
    return notes if _TAG.match(notes) else None


def _note(what: str) -> None:
    """Counted in hypothesis's statistics (`pytest --hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(what)


def _passed(entry: Entry) -> tuple[str, int] | None:
    request = entry.request
    if isinstance(request, CompleteProcess) and request.result is Result.PASS:
        return request.wip_id, request.process
    return None


class BridgeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.directory = Path(tempfile.mkdtemp(prefix="stateful-", dir=_FAST_TMP))
        self.mes = InProcessMes()
        self.wips = self.mes.app.wip_ids
        self.config = BridgeConfig(
            data_dir=self.directory,
            # Never dialled: every request goes to the in-process transport.
            mes={
                "url": "http://127.0.0.1:9",
                "username": "admin",
                "password": "admin-pass",
                "rate_limit": 100_000,
            },
            # Attempts are stepped, so no backoff or settle time is waited for; the timer that
            # announces a slow first answer would fire at no step's bidding: never.
            outbox={"retry_min_s": 0.001, "retry_max_s": 0.001, "answer_within_s": 1e6},
            stations=[{"id": "1"}, {"id": "2", "auto_convert": True}],
        )
        self.topics = Topics(self.config.mqtt.topic_prefix)
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.faults = Faults()
        self.names = (f"g{n}" for n in itertools.count(1))
        self.tags = (f"c{n}" for n in itertools.count(1))
        self.model = Model()
        self.tracked: dict[int, Tracked] = {}
        self.unacked: list[Unacked] = []
        self.mid = 0
        self.last_of_mid: dict[int, tuple[str, bytes]] = {}
        self.runner.run(self._seed_the_mes())
        self.runner.run(self._boot())

    # -- the bridge, started and killed ------------------------------------------------------

    def clock(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self.published.append((topic, payload))

    async def _seed_the_mes(self) -> None:
        for process in range(1, 6):
            await self.passed_elsewhere(self.wips[SEEDED], process)

    async def passed_elsewhere(self, wip: str, process: int) -> None:
        """A PASS the MES records from someone else (the seed, an operator in its web UI)."""
        async with MesClient(self.config.mes, transport=self.mes) as mes:
            at = self.clock()
            start = StartProcess(wip_id=wip, process=process, operator_id=OPERATOR, started_at=at)
            await mes.send(start)
            await mes.send(
                CompleteProcess(
                    wip_id=wip,
                    process=process,
                    operator_id=OPERATOR,
                    result=Result.PASS,
                    started_at=at,
                    completed_at=self.clock(),
                    notes="seed",
                )
            )
        applied = self.mes.applied
        applied[:] = [a for a in applied if a.seq is not None]

    async def _boot(self) -> None:
        """Start a bridge over what the store holds, as a restart does."""
        self.store = Store(self.config.store_dir)
        self.client = MesClient(self.config.mes, transport=self.mes)
        self.state = State(
            self.config,
            store=self.store,
            publish=self.publish,
            clock=self.clock,
            faults=self.faults,
        )
        await self.state.load()
        self.deliveries = DeliveryReports(
            self.config, self.state, mes=self.client, clock=self.clock
        )
        # No lanes: the `deliver` rule steps deliveries one attempt at a time.
        self.deliveries.dispatcher.wake = lambda wip_id: None  # type: ignore[method-assign]
        self.lifecycle = Lifecycle(
            self.state, self.deliveries, new_batch_id=lambda: next(self.names)
        )

    async def _stop(self) -> None:
        await self.client.aclose()
        await self.store.close()

    def teardown(self) -> None:
        try:
            self.runner.run(self._stop())
        finally:
            self.runner.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- messages -----------------------------------------------------------------------------

    def _received(self, said: Said, tag: str) -> Received:
        wip = self.wips[said.wip]
        body: dict[str, Any] = {}
        if said.kind in (Inbound.START, Inbound.CONVERT):
            body = {"wip_id": wip, "operator_id": OPERATOR}
        if said.kind is Inbound.START:
            body["process_id"] = said.process
        if said.kind is Inbound.MEASUREMENT:
            body = {"name": said.name, "value": said.value}
        if said.kind is Inbound.COMPLETE:
            body = {"notes": tag} | ({"result": said.result} if said.result else {})
        if said.kind is Inbound.ABORT:
            body = {"reason": "operator stopped it"}
        if said.batch_id is not None and said.kind is not Inbound.CONVERT:
            body["batch_id"] = said.batch_id
        topic = self.topics.inbound(said.station, said.kind)
        payload = json.dumps(body).encode()
        mid = self._next_mid(avoid=(topic, payload) if said.dup else None)
        dup = said.dup and mid is not None
        mid = mid or self._next_mid(avoid=None)
        assert mid is not None
        self.last_of_mid[mid] = (topic, payload)
        return Received(topic, payload, mid=mid, redelivered=dup)

    def _next_mid(self, *, avoid: tuple[str, bytes] | None) -> int | None:
        """The broker's next packet id: never one still waiting for its ack.

        A message flagged DUP whose id, topic and payload are those of the last message that
        had its id looks to the bridge exactly like a redelivery of that one; it is answered as
        before. A broker reuses an id only after 65,535 others, so this needs two identical
        messages exactly that far apart and a crash before the second's commit: the test's
        small id space would make it common, so it does not draw that case.
        """
        taken = {waiting.message.mid for waiting in self.unacked}
        for _ in range(MIDS):
            self.mid = self.mid % MIDS + 1
            if self.mid not in taken and (avoid is None or self.last_of_mid.get(self.mid) != avoid):
                return self.mid
        return None

    def _results_since(self, mark: int) -> list[dict[str, Any]]:
        return [payload for topic, payload in self.published[mark:] if "/result/" in topic]

    @rule(group=GROUPS, ack=st.sampled_from(["sent", "lost", "cancelled"]))
    def receive(self, group: list[Said], ack: str) -> None:
        """Messages that arrive together. Their ack is sent; or lost (the bridge dies, or the
        link drops, between the commit and the ack); or never sent, the group's task being
        cancelled while its commit is written (SIGTERM, a broken broker link)."""
        self.runner.run(self._receive(group, ack_lost=ack != "sent", cancel=ack == "cancelled"))

    async def _receive(self, group: list[Said], *, ack_lost: bool, cancel: bool) -> None:
        # What the bridge must make of the group, message by message (the model goes first: a
        # message is aimed at the batches the messages before it left).
        refused, ended, messages = 0, [], []
        expected: list[tuple[Expected, ModelBatch | None]] = []
        for drawn in group:
            said, tag = self.model.aim(drawn), next(self.tags)
            messages.append(self._received(said, tag))
            verdict, entry, batch = self.model.apply(said, self.wips[said.wip], tag)
            refused += verdict == "refused"
            if entry is not None:
                expected.append(
                    (entry, self.model.batches[-1] if entry.action == "start" else None)
                )
            if batch is not None and said.kind is Inbound.ABORT:
                ended.append(batch)
                # Its 착공, made in this group, was never tried: the abort takes it back.
                expected = [(e, b) for e, b in expected if b is not batch]

        before = {entry.seq: entry for entry in self.state.outbox}
        batches_before = list(self.state.batches.values())
        mark = len(self.published)
        if cancel:
            fired: list[bool] = []

            def cancel_the_commit() -> None:
                # SIGTERM, or a broken broker link, while the group's commit is being written.
                if not fired and handling is asyncio.current_task():
                    fired.append(True)
                    handling.cancel()

            self.faults.arm(FaultPoint.INSIDE_COMMIT, cancel_the_commit, times=1_000)
            handling = asyncio.ensure_future(self.lifecycle.handle(messages))
            await asyncio.wait({handling})
            _note(f"cancelled in the commit: {bool(fired)}")
            if not handling.cancelled():
                handling.result()
        else:
            await self.lifecycle.handle(messages)
        results = self._results_since(mark)
        errors = [r for r in results if r["event"] == "SEQUENCE_ERROR"]
        assert len(errors) == refused, (group, errors)

        after = {entry.seq: entry for entry in self.state.outbox}
        made = [after[seq] for seq in sorted(set(after) - set(before))]
        assert [self._expected(entry) for entry in made] == [e for e, _ in expected], (group, made)
        for entry, (wanted, _) in zip(made, expected, strict=True):
            self.tracked[entry.seq] = Tracked(
                entry.seq, wanted.action, wanted.wip, wanted.tag, passed=_passed(entry)
            )
        aborted = {
            b.uid
            for b in batches_before
            if any((b.station_id, b.wip_id) == (m.station, m.wip) for m in ended)
        }
        for seq in set(before) - set(after):
            gone = before[seq]
            # Only an abort drops an entry: its batch's 착공, never tried (the MES knows nothing).
            # A start written marked as under way (to be sent at once) still counts as never
            # tried until a delivery attempt takes it.
            never_tried = not self.tracked[seq].attempted
            assert gone.batch_uid in aborted and never_tried and gone.action == "start", gone
            assert not any(applied.seq == seq for applied in self.mes.applied), gone
            self.tracked[seq].fate = "dropped"

        if ack_lost and len(self.unacked) + len(messages) <= MAX_UNACKED:
            self.unacked += [Unacked(message, results) for message in messages]

    def _expected(self, entry: Entry) -> Expected:
        request = entry.request
        tag = _tag(request.notes) if isinstance(request, CompleteProcess) else None
        return Expected(entry.action, entry.wip_id, tag)

    @precondition(lambda self: self.unacked)
    @rule(
        picks=st.lists(st.integers(0, MAX_UNACKED - 1), min_size=1, max_size=3),
        ack_lost=st.booleans(),
    )
    def redeliver(self, picks: list[int], ack_lost: bool) -> None:
        """The broker sends again (DUP, same packet id) messages whose ack it did not get."""
        chosen = list(
            {id(w): w for w in (self.unacked[i % len(self.unacked)] for i in picks)}.values()
        )
        self.runner.run(self._redeliver(chosen))
        if not ack_lost:
            self.unacked = [w for w in self.unacked if all(w is not c for c in chosen)]

    async def _redeliver(self, chosen: list[Unacked]) -> None:
        before = (list(self.state.outbox), dict(self.state.batches))
        mark = len(self.published)
        again = [
            Received(w.message.topic, w.message.payload, mid=w.message.mid, redelivered=True)
            for w in chosen
        ]
        await self.lifecycle.handle(again)
        _note("redelivered")
        # Applied once: nothing changes, and what it is told is what it was told the first time.
        assert (list(self.state.outbox), dict(self.state.batches)) == before
        answered_before = [answer for w in chosen for answer in w.answers]
        for answer in self._results_since(mark):
            assert answer in answered_before, answer

    # -- deliveries ---------------------------------------------------------------------------

    @precondition(lambda self: self.state.outbox.waiting_wips())
    @rule(pick=st.integers(0, 2), plan=PLANS)
    def deliver(self, pick: int, plan: list[Answer]) -> None:
        """One attempt of one WIP's head entry, each MES request answered as `plan` says."""
        self.runner.run(self._deliver(pick, plan))

    async def _deliver(self, pick: int, plan: list[Answer]) -> None:
        wips = sorted(self.state.outbox.waiting_wips())
        head = self.state.outbox.head(wips[pick % len(wips)])
        assert head is not None
        before = {entry.seq: entry for entry in self.state.outbox}
        batches_before = list(self.state.batches.values())
        self.mes.plan, self.mes.attempting = list(plan), head.seq
        self.tracked[head.seq].attempted = True
        killed = False
        try:
            await self.deliveries.dispatcher._attempt(head)
        except Killed:
            killed = True
            await self._stop()
            await self._boot()
        finally:
            self.mes.plan, self.mes.attempting = [], None

        after = {entry.seq: entry for entry in self.state.outbox}
        for seq in set(before) - set(after):
            assert seq == head.seq, f"#{seq} left the outbox when #{head.seq} was attempted"
            self.tracked[seq].fate = "delivered"
        for seq in sorted(set(after) - set(before)):
            made = after[seq]
            # Only a 완공 delivered at an auto-converting station makes an entry (its 시리얼 변환).
            assert made.action == "convert" and made.wip_id == head.wip_id, made
            assert head.action == "complete" and head.station_id == "2" and head.seq not in after
            self.tracked[seq] = Tracked(seq, "convert", made.wip_id, None)
        for seq, entry in after.items():
            if entry.dead:
                self.tracked[seq].fate = "dead"
        now = after.get(head.seq)
        fate = (
            "killed"
            if killed
            else "delivered"
            if now is None
            else "dead"
            if now.dead
            else "deferred"
        )
        _note(f"attempt of a {head.action}: {fate}")
        refused_start = head.action == "start" and now is not None and now.dead
        if refused_start:  # a refused 착공 ends its batch
            for batch in batches_before:
                if batch.uid == head.batch_uid:
                    self.model.batches = [
                        b
                        for b in self.model.batches
                        if (b.station, b.wip) != (batch.station_id, batch.wip_id)
                    ]

    @precondition(lambda self: self.state.outbox.waiting_wips())
    @rule()
    def drain(self) -> None:
        """The MES answers every request cleanly until nothing waits (a few rounds at most)."""
        for _ in range(8):
            if not self.state.outbox.waiting_wips():
                return
            self.runner.run(self._deliver(0, []))

    @rule()
    def crash(self) -> None:
        """The bridge dies between two steps and starts again over the same store."""
        before = (list(self.state.outbox), dict(self.state.batches))
        self.runner.run(self._stop())
        self.runner.run(self._boot())
        assert (list(self.state.outbox), dict(self.state.batches)) == before

    # -- what must always hold ----------------------------------------------------------------

    @invariant()
    def memory_is_the_disk(self) -> None:
        batches, outbox = load_state(read_directory(self.config.store_dir))
        assert batches == self.state.batches
        assert list(outbox) == list(self.state.outbox)

    @invariant()
    def batches_are_the_models(self) -> None:
        bridge = sorted(
            (
                b.station_id,
                "" if b.batch_id.startswith("g") else b.batch_id,
                b.wip_id,
                b.process,
                sorted((name, m.value) for name, m in b.measurements.items()),
            )
            for b in self.state.batches.values()
        )
        assert bridge == self.model.rows()

    @invariant()
    def the_mes_holds_each_record_once_in_order_and_none_is_lost(self) -> None:
        history = self.mes.app.ledger()["history"]
        recorded = Counter(_tag(row["notes"]) for row in history if row["notes"] != "seed")
        completes = {t.tag: t for t in self.tracked.values() if t.action == "complete"}
        for tag, times in recorded.items():
            assert tag in completes, f"the MES holds a record no complete made: {tag}"
            assert times == 1, f"the MES holds {completes[tag]} {times} times"
        applied = [a.seq for a in self.mes.applied if a.seq is not None]
        changes = Counter(seq for seq in applied if self.tracked[seq].action != "start")
        assert all(times == 1 for times in changes.values()), changes  # starts may repeat
        for wip in self.wips:
            order = [seq for seq in applied if self.tracked[seq].wip == wip]
            assert order == sorted(order), f"{wip}: the MES got #{order} in this order"
        for tracked in self.tracked.values():
            entry = self.state.outbox.get(tracked.seq)
            reached = recorded[tracked.tag] if tracked.tag else tracked.seq in applied
            if tracked.fate == "pending":
                assert entry is not None and not entry.dead, tracked
            elif tracked.fate == "dead":
                assert entry is not None and entry.dead_reason is not None, tracked
                assert entry.dead_reason["code"] in REFUSALS, (tracked, entry.dead_reason)
                assert not reached, f"{tracked} is dead-lettered, but the MES holds it"
            elif tracked.fate == "delivered":
                assert entry is None
                assert reached, f"{tracked} delivered, not recorded"
            else:
                assert entry is None and not reached, tracked


# A few dozen runs of up to 30 steps: about 30 s here (shrinking a failure takes minutes).
# `pytest --hypothesis-show-statistics` shows what they did (attempts by outcome, redeliveries,
# cancelled commits).
RUNS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    database=None,  # a failure prints every step that led to it: that is the record
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(600)  # a failure takes minutes to shrink
class TestEveryRecordReachesTheMesOnceInOrderWhateverHappens(BridgeMachine.TestCase):  # type: ignore[name-defined,misc]
    settings = RUNS
