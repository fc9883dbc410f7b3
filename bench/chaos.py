"""The chaos run: many WIPs through processes 1..6 while everything around the bridge fails, then
the MES's ledger is held against what the stations sent.

    .venv/bin/python bench/chaos.py [--wips N] [--kills K] [--aimed A] [--seed S] ...

Real parts only: a Mosquitto of its own (persistence on, on a free loopback port, restarted
twice), the bridge as its own OS process (`python -m bridge run`, SIGKILLed K times, A of them
by itself at the commit-to-ack seam via STATION_BRIDGE_FAULTS), and the MES simulator in this
process (outages, lost answers, 5xx bursts, its 100 requests/minute limit). Stations keep
publishing while the bridge is dead: their messages wait in the bridge's persistent session.
After each broker restart the bridge must connect again by itself.

"Sent" means acknowledged by the broker (QoS 1 PUBACK): from then on the record is the bridge's
to deliver. Stations do not publish while the broker itself is being restarted (a tablet cannot
reach it either), so nothing is ever half-sent.

It prints the faults that happened, then one line of figures, and exits 1 when anything was lost,
duplicated, out of order or wrong at the MES, when a dead letter is not one of the refusals the
run provoked on purpose, or when the outbox did not drain. See bench/README.md (`chaos.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import math
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import aiomqtt
import yaml
from chaos_ledger import MARK, SentRecord, Verdict, compare, notes_for, tally

from bridge.adapters.store import read_directory
from bridge.config import BridgeConfig, OutboxConfig
from bridge.core.outbox import Entry, load_state
from bridge.core.topics import Inbound, Topics
from bridge.faults import ENV as FAULTS_ENV
from mes_sim import MesSimulator
from mes_sim.app import FaultMode

ROOT = Path(__file__).resolve().parents[1]
OPERATOR = 2  # operator1 on the simulator
PREFIX = "chaos"
BRIDGE_ID = "chaos"
# Refusals the run provokes on purpose: conversions of WIPs the MES does not have.
PROVOKED = "WIP_NOT_FOUND"
SETTLE_S = 1.0
SHOWN = 30  # problems printed (the JSON has every one)
EXPLAINED = 10  # damaged batches shown with the faults before them (the JSON has every problem)
RECONNECT_S = 30.0  # a bridge (reconnect_max_s 2, dead for at most 8 s) is back on the broker
# The simulator's faults this run uses, in turn (an older simulator lacks some: those are left
# out). Bursts are mostly 5xx answers to requests the MES did apply; outages are the database
# (503 on /api while /health says 200), the HTTP service (503), the whole host (refused).
_MODES = {*get_args(FaultMode), "stopped"}
BURSTS: list[dict[str, Any]] = [
    burst
    for burst in (
        {"mode": "apply_then_error", "error_status": 500},
        {"mode": "error_500"},
        {"mode": "apply_then_garble"},
        {"mode": "apply_then_error", "error_status": 502},
        {"mode": "apply_then_error", "error_status": 504},
    )
    if burst["mode"] in _MODES
]
OUTAGES = [mode for mode in ("database_down", "unavailable", "stopped") if mode in _MODES]


# -- the plan (pure, from the seed) --------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    seq: int
    wip_id: str
    process: int
    station: str
    ending: str  # PASS, FAIL or ABORT
    start_has_id: bool  # the start names a batch_id (else the bridge makes one up)
    measurement_has_id: bool
    end_has_id: bool

    @property
    def batch_id(self) -> str:
        return f"b{self.seq}"


@dataclass(frozen=True)
class Kill:
    at: float  # seconds into the run
    seam: str | None  # a fault point the bridge kills itself at, or None for a kill from here
    nth: int  # ... the nth time it passes it
    downtime: float


@dataclass(frozen=True)
class Options:
    wips: int
    stations: int
    kills: int
    aimed: int
    broker_restarts: int
    outages: int
    bursts: int
    lost_answers: float
    fail_rate: float
    abort_rate: float
    pace: float  # batches per second, all stations together
    bad_converts: int
    seed: int
    drain_timeout: float
    keep: bool
    json_out: Path | None
    quick: bool  # short downtimes and outages, for the test suite


def plan_batches(options: Options, wip_ids: Sequence[str], rng: random.Random) -> list[list[Batch]]:
    """Each WIP's batches in order: processes 1..6, some FAILed and redone, some aborted and
    redone. Process p of the w-th WIP runs at station (w + p) mod the number of stations."""
    plans: list[list[Batch]] = []
    seq = 0
    for index, wip_id in enumerate(wip_ids):
        batches: list[Batch] = []
        for process in range(1, 7):
            while True:
                roll = rng.random()
                if roll < options.abort_rate:
                    ending = "ABORT"
                elif roll < options.abort_rate + options.fail_rate:
                    ending = "FAIL"
                else:
                    ending = "PASS"
                start_has_id = rng.random() < 0.5
                seq += 1
                batches.append(
                    Batch(
                        seq=seq,
                        wip_id=wip_id,
                        process=process,
                        station=station_name((index + process) % options.stations),
                        ending=ending,
                        start_has_id=start_has_id,
                        measurement_has_id=start_has_id and rng.random() < 0.4,
                        end_has_id=start_has_id and rng.random() < 0.4,
                    )
                )
                if ending == "PASS":
                    break
        plans.append(batches)
    return plans


def station_name(index: int) -> str:
    return f"S{index + 1}"


def auto_converts(station: str) -> bool:
    """Odd stations convert by themselves; at the others the station asks (wip/convert)."""
    return int(station[1:]) % 2 == 1


def plan_kills(options: Options, window: float, rng: random.Random) -> list[Kill]:
    """The bridge's deaths, in order; `aimed` of them at a seam (after_commit twice as often as
    inside_commit)."""
    seams = ["after_commit", "after_commit", "inside_commit"]
    aimed = set(rng.sample(range(options.kills), min(options.aimed, options.kills)))
    times = sorted(rng.uniform(0.08, 0.85) * window for _ in range(options.kills))
    kills = []
    for i, at in enumerate(times):
        aimed_here = i in aimed
        downtime = rng.uniform(1, 2) if options.quick else rng.uniform(2, 8)
        kills.append(
            Kill(
                at=at,
                seam=seams[len([k for k in kills if k.seam]) % len(seams)] if aimed_here else None,
                nth=rng.randint(2, 8),  # soon: while the backlog of its downtime arrives
                downtime=downtime,
            )
        )
    return kills


def armed(kill: Kill) -> str | None:
    """The STATION_BRIDGE_FAULTS value that makes the bridge kill itself, if this kill is aimed."""
    return f"{kill.seam}=kill@{kill.nth}" if kill.seam else None


def spread(count: int, window: float, rng: random.Random) -> list[float]:
    """`count` moments in the window, one in each of `count` equal slices."""
    return [window * (0.1 + 0.75 * (i + rng.random()) / count) for i in range(count)]


# -- the parts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnDisk:
    pending: int
    active_batches: int
    dead: list[Entry]


def read_store(store_dir: Path) -> OnDisk:
    """What the bridge's store holds (safe while it runs, as `station-bridge outbox list`)."""
    batches, outbox = load_state(read_directory(store_dir))
    return OnDisk(len(outbox.pending()), len(batches), outbox.dead())


class Log:
    """What happened when (seconds since the start), printed at the end when something is wrong."""

    def __init__(self, path: Path) -> None:
        self.started = time.monotonic()
        self.path = path
        self.lines: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, text: str) -> None:
        self.lines.append((self.now(), text))
        with self.path.open("a") as out:
            out.write(f"{self.now():8.2f}  {text}\n")

    def before(self, moment: float, count: int = 3) -> list[str]:
        earlier = [f"{t:.1f} s {text}" for t, text in self.lines if t <= moment]
        return earlier[-count:]


async def poll(condition: Callable[[], bool], *, within: float, every: float = 0.2) -> bool:
    """For what only a thread of this process (the simulator) knows: no event to wait on."""
    for _ in range(math.ceil(within / every)):
        if condition():
            return True
        await asyncio.sleep(every)
    return condition()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """A Mosquitto of this run's own, with persistence, that can be stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._config = directory / "mosquitto.conf"
        (directory / "mosquitto").mkdir()
        self._config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {directory / 'mosquitto'}/",
                    # The bridge's backlog while it is dead must not be cut at 1000 messages.
                    "max_queued_messages 0",
                    f"log_dest file {directory / 'mosquitto.log'}",
                    f"user {getpass.getuser()}",  # as root it would switch to "mosquitto"
                    "",
                ]
            )
        )
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "mosquitto",
            "-c",
            str(self._config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,  # it logs to its file; as root it warns here
        )
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM: Mosquitto writes its sessions and queued messages to disk and exits."""
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await asyncio.wait_for(self._process.wait(), 30)
        self._process = None


class Bridge:
    """`python -m bridge run` as its own process, so that it can really be SIGKILLed."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self._config_file = config_file
        self._log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self.exits: list[int] = []
        self.starts = 0

    async def start(self, faults: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATION_BRIDGE_")}
        if faults:
            env[FAULTS_ENV] = faults
        self.starts += 1
        with self._log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                "--config",
                str(self._config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )

    async def wait_exit(self, within: float) -> int | None:
        assert self._process is not None
        try:
            code = await asyncio.wait_for(self._process.wait(), max(within, 0))
        except TimeoutError:
            return None
        self.exits.append(code)
        return code

    async def kill(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self.exits.append(await self._process.wait())

    async def terminate(self) -> int:
        assert self._process is not None
        if self._process.returncode is None:
            self._process.terminate()
        return await asyncio.wait_for(self._process.wait(), 30)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None


class Stations:
    """Every station's and tablet's MQTT traffic over one client: what it sends is published one
    message at a time, each awaited until the broker acknowledged it. A broker restart pauses it
    (`paused`), so no message is ever in the air while the broker is down."""

    def __init__(self, port: int, topics: Topics) -> None:
        self._port = port
        self.topics = topics
        self._identifier = f"chaos-stations-{uuid.uuid4().hex[:6]}"
        self._client: aiomqtt.Client | None = None
        self._gate = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self.sent = 0
        self.availability = ""
        self.refused: list[str] = []  # the details of the refusals the tablets were told
        self.errors: Counter[str] = Counter()  # what the tablets were told was wrong
        self.changed = asyncio.Event()

    async def connect(self) -> None:
        # A persistent session: the outcomes published while the broker restarts are kept.
        client = aiomqtt.Client(
            "127.0.0.1", self._port, identifier=self._identifier, clean_session=False
        )
        await client.__aenter__()
        for topic in (
            self.topics.availability(BRIDGE_ID),
            self.topics.results(),
        ):
            await client.subscribe(topic, qos=1)
        self._client = client
        self._reader = asyncio.create_task(self._read(client))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
        self._client = self._reader = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        async with self._gate:
            await self.close()
            yield
            await self.connect()

    async def send(self, station: str, kind: Inbound, payload: dict[str, Any]) -> None:
        async with self._gate:
            assert self._client is not None
            body = json.dumps(payload).encode()
            await self._client.publish(self.topics.inbound(station, kind), body, qos=1, timeout=30)
            self.sent += 1

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            topic = message.topic.value
            if topic.endswith("/availability"):
                self.availability = message.payload.decode()
            elif topic.endswith("/result/error"):
                error = json.loads(message.payload)["error"]
                self.errors[error["code"]] += 1
                self.refused.append(str(error.get("detail")))
            self.changed.set()

    async def probe(self, name: str) -> None:
        """A message the bridge must refuse (a field `name` no payload has), not counted as sent:
        only a bridge that received it, i.e. is connected now, can answer it."""
        async with self._gate:
            assert self._client is not None
            topic = self.topics.inbound(station_name(0), Inbound.MEASUREMENT)
            await self._client.publish(topic, json.dumps({name: 1}), qos=1, timeout=30)

    def answered(self, probe: str) -> bool:
        return any(probe in detail for detail in self.refused)

    async def wait(self, condition: Any, within: float) -> bool:
        """Until `condition()` holds (True) or the time is up (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not condition():
                    self.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), 1)
                return True
        return False


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Figures:
    wips: int
    seed: int
    sent_messages: int = 0
    sent_while_down: int = 0  # of them, while the bridge was dead (they waited at the broker)
    expected: int = 0
    recorded: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    mismatched: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    unexpected_dead_letters: int = 0
    pending_left: int = 0
    rate_limited: int = 0
    requests: int = 0
    answers_dropped: int = 0
    drain_s: float | None = None
    total_s: float = 0.0
    kills: int = 0
    aimed_kills: int = 0
    aimed_fired: int = 0
    broker_restarts: int = 0
    reconnects_missed: int = 0  # broker restarts after which the bridge did not connect again
    outages: int = 0
    bursts: int = 0
    tablet_errors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == self.duplicated == self.out_of_order == self.mismatched == 0
            and self.unexpected_dead_letters == 0
            and self.reconnects_missed == 0
            and self.pending_left == 0
            and self.drain_s is not None
        )

    def line(self) -> str:
        drain = f"{self.drain_s:.1f} s" if self.drain_s is not None else "NOT DRAINED"
        dead = ", ".join(f"{code} {n}" for code, n in sorted(self.dead_letters.items())) or "0"
        return (
            f"sent {self.sent_messages} messages ({self.sent_while_down} while the bridge was "
            f"dead; {self.expected} records owed) | "
            f"recorded {self.recorded} | lost {self.lost} | duplicated {self.duplicated} | "
            f"out of order {self.out_of_order} | wrong {self.mismatched} | "
            f"dead-lettered {dead} ({self.unexpected_dead_letters} not provoked) | "
            f"429s {self.rate_limited} | drain {drain}"
        )

    def faults_line(self) -> str:
        share = self.answers_dropped / self.requests if self.requests else 0.0
        return (
            f"{self.wips} WIPs, seed {self.seed}, {self.total_s:.0f} s: "
            f"{self.kills} SIGKILLs of the bridge ({self.aimed_fired} of {self.aimed_kills} "
            f"aimed fired at their seam), {self.broker_restarts} broker restarts ("
            f"{self.reconnects_missed} not followed by the bridge connecting again), "
            f"{self.outages} MES outages, {self.bursts} 5xx bursts, {self.answers_dropped} "
            f"answers lost of {self.requests} MES requests ({share:.1%}); tablets were told: "
            f"{tally(Counter(self.tablet_errors).elements())}"
        )


class Run:
    def __init__(self, options: Options, directory: Path) -> None:
        self.options = options
        self.dir = directory
        self.rng = random.Random(options.seed)
        self.log = Log(directory / "events.log")
        self.sim = MesSimulator(wips=options.wips + 1)
        self.broker = Mosquitto(directory)
        self.stations = Stations(self.broker.port, Topics(PREFIX))
        self.bridge = Bridge(directory / "bridge.yaml", directory / "bridge.log")
        self.figures = Figures(wips=options.wips, seed=options.seed)
        self.sent: list[SentRecord] = []
        self.sent_at: dict[int, float] = {}
        self.converts_owed: set[str] = set()
        self.chaos_over = asyncio.Event()
        self.quiet = asyncio.Lock()  # held by a broker restart until the bridge is back
        self.store_dir = directory / "data" / "store"

    def write_bridge_config(self) -> None:
        stations = [
            {"id": station_name(i), "auto_convert": auto_converts(station_name(i))}
            for i in range(self.options.stations)
        ]
        config: dict[str, Any] = {
            "bridge_id": BRIDGE_ID,
            "data_dir": str(self.dir / "data"),
            "mqtt": {
                "port": self.broker.port,
                "topic_prefix": PREFIX,
                "keepalive_s": 5,
                "reconnect_max_s": 2,
            },
            "mes": {"url": self.sim.url, "username": "admin", "password": "admin-pass"},
            "outbox": {"retry_min_s": 0.2, "retry_max_s": 5, "probe_interval_s": 0.5},
            "stations": stations,
        }
        if "settle_s" in OutboxConfig.model_fields:
            # The simulator has finished a request before its answer is lost (this run has no
            # `slow` fault), so the wait before asking its trace can be short.
            config["outbox"]["settle_s"] = SETTLE_S
        BridgeConfig(**config)  # fails here, readably, if this bridge has other settings
        (self.dir / "bridge.yaml").write_text(yaml.safe_dump(config))

    async def main(self) -> Figures:
        options = self.options
        self.sim.start()
        try:
            await self.broker.start()
            self.write_bridge_config()
            await self.stations.connect()
            wip_ids = self.sim.wip_ids[: options.wips]
            plans = plan_batches(options, wip_ids, self.rng)
            batches = sum(len(plan) for plan in plans)
            window = batches / options.pace
            kills = plan_kills(options, window, self.rng)
            self.log.started = time.monotonic()  # the plan's moments count from here
            await self.start_bridge(kills[0] if kills else None)
            # Its session must exist before the stations publish, or the broker drops for it.
            if not await self.stations.wait(lambda: self.stations.availability == "online", 60):
                raise RuntimeError("the bridge did not come online within 60 s")
            self.log(f"{batches} batches of {len(wip_ids)} WIPs over about {window:.0f} s")
            started = time.monotonic()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.lost_answers())
                chaos = [
                    tasks.create_task(self.bridge_lives(kills)),
                    tasks.create_task(self.broker_restarts(window)),
                    tasks.create_task(self.mes_faults(window)),
                ]
                await self.drive(plans)
                self.log("every station message is sent")
                await asyncio.gather(*chaos)
                self.chaos_over.set()
            self.log("the chaos is over: draining")
            await self.drain(started)
        finally:
            if self.bridge.alive:
                await self.bridge.kill()
            await self.stations.close()
            await self.broker.stop()
            self.sim.stop()
        return self.figures

    # stations

    async def drive(self, plans: list[list[Batch]]) -> None:
        station_locks = {station_name(i): asyncio.Lock() for i in range(self.options.stations)}
        at_once = asyncio.Semaphore(2 * self.options.stations)  # WIPs in the line at a time
        turn = asyncio.Lock()
        gap = 1 / self.options.pace

        async def paced() -> None:
            async with turn:
                await asyncio.sleep(gap * self.rng.uniform(0.5, 1.5))

        async def one_wip(plan: list[Batch]) -> None:
            async with at_once:
                for batch in plan:
                    await paced()
                    async with station_locks[batch.station]:
                        await self.run_batch(batch)
                last = plan[-1]
                if not auto_converts(last.station):
                    convert = {"wip_id": last.wip_id, "operator_id": OPERATOR}
                    await self.send(last.station, Inbound.CONVERT, convert)
                self.converts_owed.add(last.wip_id)

        async def provoked_refusals() -> None:
            for i in range(self.options.bad_converts):
                await asyncio.sleep(self.rng.uniform(1, 3) * len(plans[0]) * gap)
                convert = {"wip_id": f"WIP-NOT-AT-THE-MES-{i}", "operator_id": OPERATOR}
                await self.send(station_name(0), Inbound.CONVERT, convert)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(provoked_refusals())
            for plan in plans:
                tasks.create_task(one_wip(plan))

    async def send(self, station: str, kind: Inbound, payload: dict[str, Any]) -> None:
        down = not self.bridge.alive
        await self.stations.send(station, kind, payload)
        if down and not self.bridge.alive:
            self.figures.sent_while_down += 1

    async def run_batch(self, batch: Batch) -> None:
        send = self.send
        start: dict[str, Any] = {
            "wip_id": batch.wip_id,
            "process_id": batch.process,
            "operator_id": OPERATOR,
        }
        named = {"batch_id": batch.batch_id}
        await send(batch.station, Inbound.START, start | (named if batch.start_has_id else {}))
        reading: dict[str, Any] = {"name": MARK, "value": batch.seq}
        if batch.measurement_has_id:
            reading |= named
        await send(batch.station, Inbound.MEASUREMENT, reading)
        more = {"measurements": {"torque_nm": round(self.rng.uniform(1, 2), 3)}}
        await send(batch.station, Inbound.MEASUREMENT, more)
        end_id = named if batch.end_has_id else {}
        if batch.ending == "ABORT":
            await send(batch.station, Inbound.ABORT, {"reason": "chaos: dropped part"} | end_id)
            return
        complete = {"result": batch.ending, "notes": notes_for(batch.seq)} | end_id
        await send(batch.station, Inbound.COMPLETE, complete)
        self.sent.append(SentRecord(batch.seq, batch.wip_id, batch.process, batch.ending))
        self.sent_at[batch.seq] = self.log.now()

    # faults

    async def until(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, moment - self.log.now()))

    async def bridge_lives(self, kills: list[Kill]) -> None:
        """Each life of the bridge ends in a SIGKILL: from here at its moment, or, when aimed, by
        the bridge itself at its seam (from here at the moment if the seam never fired)."""
        for i, kill in enumerate(kills):
            self.figures.kills += 1
            aim = armed(kill)
            # A life is long enough to connect and work (and, aimed, to reach its seam).
            shortest = (1.5 if self.options.quick else 3.0) * (3 if aim else 1)
            until = max(kill.at, self.log.now() + shortest)
            if aim is not None:
                self.figures.aimed_kills += 1
                code = await self.bridge.wait_exit(until - self.log.now())
                if code is not None and code != -signal.SIGKILL:
                    raise RuntimeError(f"the bridge exited with {code}: see bridge.log")
                if code is None:
                    async with self.quiet:
                        self.log(f"{aim} did not fire in time: killing the bridge from here")
                        await self.bridge.kill()
                else:
                    self.figures.aimed_fired += 1
                    self.log(f"the bridge killed itself at {aim}")
            else:
                await self.until(until)
                async with self.quiet:
                    if not self.bridge.alive:
                        raise RuntimeError(f"the bridge died by itself: see {self.dir}/bridge.log")
                    await self.bridge.kill()
                    self.log("bridge SIGKILLed")
            await asyncio.sleep(kill.downtime)
            async with self.quiet:
                await self.start_bridge(kills[i + 1] if i + 1 < len(kills) else None)

    async def start_bridge(self, next_kill: Kill | None) -> None:
        aim = armed(next_kill) if next_kill else None
        await self.bridge.start(faults=aim)
        self.log(f"bridge started{f' armed with {aim}' if aim else ''}")

    async def broker_restarts(self, window: float) -> None:
        for moment in spread(self.options.broker_restarts, window, self.rng):
            await self.until(moment)
            await self.restart_broker()
            self.figures.broker_restarts += 1

    async def restart_broker(self) -> None:
        """Stop and start the broker under a connected bridge, and see the bridge connect again
        by itself: its session holds what the stations send meanwhile. The script neither kills
        nor starts the bridge until then (`quiet`); if the bridge kills itself at a seam
        meanwhile, whether it would have come back is not known."""
        probe = f"chaos_probe_{self.figures.broker_restarts}"
        await poll(lambda: self.bridge.alive, within=60)
        async with self.quiet:
            life = self.bridge.starts
            checked = await self.answers(f"{probe}_before")  # connected, not still connecting
            async with self.stations.paused():
                await self.broker.stop()
                self.log("broker stopped")
                # Longer than the bridge's first reconnect delay (at most 1 s): one is refused.
                await asyncio.sleep(self.rng.uniform(1.5, 2) if self.options.quick else 2)
                await self.broker.start()
                self.log("broker started")
            back = await self.answers(f"{probe}_after")
        if not checked or self.bridge.starts != life or not self.bridge.alive:
            self.log("the bridge died meanwhile: whether it would have connected again is unknown")
        elif back:
            self.log("the bridge is connected again")
        else:
            self.figures.reconnects_missed += 1
            self.log(f"the bridge did not connect again within {RECONNECT_S:.0f} s")

    async def answers(self, probe: str) -> bool:
        """Whether the bridge answers a probe within RECONNECT_S (False also when it died)."""
        await self.stations.probe(probe)
        await self.stations.wait(
            lambda: self.stations.answered(probe) or not self.bridge.alive, RECONNECT_S
        )
        return self.stations.answered(probe)

    async def mes_faults(self, window: float) -> None:
        """Outages and 5xx bursts, each at its moment."""
        events = [(t, self.outage) for t in spread(self.options.outages, window, self.rng)]
        events += [(t, self.burst) for t in spread(self.options.bursts, window, self.rng)]
        for moment, fault in sorted(events, key=lambda event: event[0]):
            await self.until(moment)
            await fault()

    async def lost_answers(self) -> None:
        """About `lost_answers` of the MES's answers are lost (drop_response, one at a time)
        until the chaos is over, except while another fault holds the MES."""
        next_drop = self.next_drop(0)
        while not self.chaos_over.is_set():
            requests = self.sim.ledger()["requests"]
            if requests >= next_drop and self.sim.faults()["mode"] == "ok":
                self.sim.set_faults(mode="drop_response", times=1)
                next_drop = self.next_drop(requests)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.chaos_over.wait(), 0.2)
        self.sim.set_faults(mode="ok")

    def next_drop(self, requests: int) -> float:
        if self.options.lost_answers <= 0:
            return math.inf
        mean = 1 / self.options.lost_answers
        return requests + self.rng.uniform(0.5, 1.5) * mean

    async def outage(self) -> None:
        quick = self.options.quick
        length = self.rng.uniform(1.5, 3) if quick else self.rng.uniform(5, 20)
        kind = OUTAGES[self.figures.outages % len(OUTAGES)]
        self.log(f"MES outage ({kind}) for {length:.1f} s")
        if kind == "stopped":
            await asyncio.to_thread(self.sim.stop)
            await asyncio.sleep(length)
            await asyncio.to_thread(self.sim.start)
        else:
            self.sim.set_faults(mode=kind)
            await asyncio.sleep(length)
            self.sim.set_faults(mode="ok")
        self.log("MES back")
        self.figures.outages += 1

    async def burst(self) -> None:
        fault = BURSTS[self.figures.bursts % len(BURSTS)]
        count = self.rng.randint(2, 4) if self.options.quick else self.rng.randint(3, 8)
        self.sim.set_faults(**fault, times=count)
        self.log(f"MES answers the next {count} requests with {fault}")
        self.figures.bursts += 1
        # Used up before the next fault, which would otherwise replace it.
        await poll(lambda: self.sim.faults()["mode"] == "ok", within=60)

    # the end

    async def drain(self, started: float) -> None:
        """Until the MES holds every record owed and the bridge's disk shows no pending request
        and no open batch; or until nothing moved for a while (then something is missing)."""
        drain_started = time.monotonic()
        owed = (len(self.sent), len(self.converts_owed))
        deadline = drain_started + self.options.drain_timeout
        last: tuple[int, int, int] | None = None
        moved_at = time.monotonic()
        while time.monotonic() < deadline:
            ledger = self.sim.ledger()
            converted = sum(1 for w in ledger["wips"] if w["status"] == "CONVERTED")
            disk = await asyncio.to_thread(read_store, self.store_dir)
            now = (len(ledger["history"]), converted, disk.pending)
            if now != last:
                last, moved_at = now, time.monotonic()
            idle = disk.pending == 0 and disk.active_batches == 0
            provoked = sum(1 for e in disk.dead if (e.dead_reason or {}).get("code") == PROVOKED)
            if idle and now[:2] >= owed and provoked >= self.options.bad_converts:
                self.figures.drain_s = time.monotonic() - drain_started
                break
            if idle and time.monotonic() - moved_at > 15:
                self.figures.drain_s = time.monotonic() - drain_started
                self.log("nothing waits at the bridge, but the MES lacks records")
                break
            await asyncio.sleep(1)
        self.log("drained" if self.figures.drain_s is not None else "NOT drained")
        code = await self.bridge.terminate()
        self.log(f"bridge stopped (exit {code})")
        self.figures.total_s = time.monotonic() - started
        disk = await asyncio.to_thread(read_store, self.store_dir)
        self.count(self.sim.ledger(), disk)

    def count(self, ledger: dict[str, Any], disk: OnDisk) -> None:
        figures = self.figures
        verdict = compare(self.sent, self.converts_owed, ledger)
        figures.sent_messages = self.stations.sent
        figures.expected, figures.recorded = verdict.expected, verdict.recorded
        figures.lost, figures.duplicated = len(verdict.lost), len(verdict.duplicated)
        figures.out_of_order = len(verdict.out_of_order)
        figures.mismatched = len(verdict.mismatched)
        figures.pending_left = disk.pending
        reasons = Counter((entry.dead_reason or {}).get("code", "?") for entry in disk.dead)
        figures.dead_letters = dict(reasons)
        provoked = min(reasons.get(PROVOKED, 0), self.options.bad_converts)
        figures.unexpected_dead_letters = len(disk.dead) - provoked
        figures.rate_limited = ledger["rate_limited"]
        figures.requests = ledger["requests"]
        figures.answers_dropped = ledger["responses_dropped"]
        figures.tablet_errors = dict(self.stations.errors)
        figures.problems = self.explain(verdict, disk.dead)

    def explain(self, verdict: Verdict, dead: list[Entry]) -> list[str]:
        problems = []
        if self.figures.reconnects_missed:
            problems.append(
                f"the bridge did not connect again after {self.figures.reconnects_missed} broker "
                "restart(s): what stations sent after it waited at the broker (see events.log)"
            )
        for kind, items in (
            ("lost", verdict.lost),
            ("duplicated", verdict.duplicated),
            ("out of order", verdict.out_of_order),
            ("wrong", verdict.mismatched),
        ):
            problems += [f"{kind}: {item}" for item in items]
        for entry in dead:
            reason = entry.dead_reason or {}
            if reason.get("code") != PROVOKED:
                problems.append(
                    f"dead letter {entry.describe()}: {reason.get('code')} {reason.get('detail')}"
                )
        shown = 0
        for record in self.sent:
            if shown < EXPLAINED and any(f"(batch #{record.seq})" in p for p in problems):
                shown += 1
                sent = self.sent_at[record.seq]
                before = "; ".join(self.log.before(sent)) or "nothing"
                problems.append(f"  batch #{record.seq} was sent at {sent:.1f} s, after: {before}")
        return problems


# -- the command ---------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wips", type=int, default=100, help="WIPs taken through 1..6 (100)")
    parser.add_argument("--stations", type=int, default=6, help="stations (6)")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of the bridge (6)")
    parser.add_argument("--aimed", type=int, default=3, help="of them, aimed at a seam (3)")
    parser.add_argument("--broker-restarts", type=int, default=2, help="(2)")
    parser.add_argument("--outages", type=int, default=4, help="MES outages (4)")
    parser.add_argument("--bursts", type=int, default=4, help="MES 5xx bursts (4)")
    parser.add_argument("--lost-answers", type=float, default=0.05, help="share (0.05)")
    parser.add_argument("--fail-rate", type=float, default=0.08, help="FAIL, then redo (0.08)")
    parser.add_argument("--abort-rate", type=float, default=0.04, help="abort, then redo (0.04)")
    parser.add_argument(
        "--pace", type=float, default=0.6, help="batches per second, all stations (0.6)"
    )
    parser.add_argument("--bad-converts", type=int, default=2, help="provoked refusals (2)")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--drain-timeout", type=float, default=1200, help="seconds (1200)")
    parser.add_argument("--quick", action="store_true", help="short downtimes (the test's)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.wips <= 998 or args.stations < 1 or args.kills < 0 or args.pace <= 0:
        parser.error("need 1..998 WIPs, at least one station, kills >= 0, pace > 0")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    return Options(
        wips=args.wips,
        stations=args.stations,
        kills=args.kills,
        aimed=args.aimed,
        broker_restarts=args.broker_restarts,
        outages=args.outages,
        bursts=args.bursts,
        lost_answers=args.lost_answers,
        fail_rate=args.fail_rate,
        abort_rate=args.abort_rate,
        pace=args.pace,
        bad_converts=args.bad_converts,
        seed=seed,
        drain_timeout=args.drain_timeout,
        keep=args.keep,
        json_out=args.json,
        quick=args.quick,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    if shutil.which("mosquitto") is None:
        print("chaos: the mosquitto binary is needed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    run = Run(options, directory)
    print(f"chaos: seed {options.seed}, working in {directory}", flush=True)
    figures = asyncio.run(run.main())
    damage = [p for p in figures.problems if not p.startswith(" ")]
    for problem in damage[:SHOWN]:
        print(f"  {problem}")
    if len(damage) > SHOWN:
        print(f"  … and {len(damage) - SHOWN} more (all of them in --json)")
    for explanation in (p for p in figures.problems if p.startswith(" ")):
        print(f"  {explanation}")
    print(f"faults: {figures.faults_line()}")
    print(figures.line(), flush=True)
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(asdict(figures) | {"ok": figures.ok}, indent=1))
    if figures.ok and not options.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"chaos: the run's logs are in {directory}")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
